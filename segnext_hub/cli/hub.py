"""``segnext-hub``: pull, list, inspect and use published SegNeXt weights."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segnext-hub")
def main() -> None:
    """Download, verify, convert, cache and use published SegNeXt checkpoints.

    Names such as mscan-t (MMSeg ADE20K model), mscan-t-in1k (ImageNet backbone) or
    mscan-b-cityscapes-official are listed by `segnext-hub list`.
    """


def _register() -> None:
    """Import every ``cmd_*.py`` beside this file; each adds its commands to ``main``."""
    import importlib
    import pkgutil
    from pathlib import Path

    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            importlib.import_module(f"{__package__}.{info.name}")


_register()
