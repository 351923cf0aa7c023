"""``segnext-convert``: any SegNeXt checkpoint to verified MMSeg-named weights."""

from __future__ import annotations

import click

from .. import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segnext-convert")
def main() -> None:
    """Convert a SegNeXt checkpoint (official, Jittor or MMSeg layout) and verify it."""
