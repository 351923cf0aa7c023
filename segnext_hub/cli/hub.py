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


# Each command lives in its own module and registers itself on `main` here.
def _register() -> None:
    import importlib

    for module in ():
        importlib.import_module(f"{__package__}.{module}")


_register()
