"""``segnext-hub``: pull, list, inspect and use published SegNeXt weights."""

from __future__ import annotations

import click

from .._version import __version__
from . import cache_commands, push_command, use_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segnext-hub")
def main() -> None:
    """Download, verify, convert, cache and use published SegNeXt checkpoints.

    Names such as mscan-t (MMSeg ADE20K model), mscan-t-in1k (ImageNet backbone) or
    mscan-b-cityscapes-official are listed by `segnext-hub list`.
    """


# Registered explicitly, in the order `--help` lists them.
for _command in (
    cache_commands.list_command, cache_commands.pull, cache_commands.info, cache_commands.path,
    cache_commands.verify, cache_commands.rm, cache_commands.log,
    use_commands.predict, use_commands.eval_command, use_commands.export, push_command.push,
):
    main.add_command(_command)

if __name__ == "__main__":
    main()
