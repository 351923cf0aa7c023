"""``segnext-hub``: pull, list, inspect and use published SegNeXt weights."""

from __future__ import annotations

import difflib

import click

from .._version import __version__
from . import cache_commands, push_command, use_commands


# What people type from other tools -> our command (pip/hf/docker habits).
COMMAND_SYNONYMS = {
    "download": "pull", "get": "pull", "fetch": "pull", "install": "pull", "clone": "pull",
    "ls": "list", "models": "list", "show": "info", "inspect": "info", "where": "path",
    "check": "verify", "remove": "rm", "delete": "rm", "del": "rm", "uninstall": "rm", "purge": "rm",
    "run": "predict", "infer": "predict", "segment": "predict", "evaluate": "eval", "test": "eval",
    "upload": "push", "publish": "push", "logs": "log",
}


class SuggestingGroup(click.Group):
    """A click group whose "No such command" says which command was probably meant."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[override]
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            guess = COMMAND_SYNONYMS.get(name.lower())
            if guess is None:
                close = difflib.get_close_matches(name.lower(), self.list_commands(ctx), n=1, cutoff=0.6)
                guess = close[0] if close else None
            if name.lower() == "convert":
                ctx.fail(f"No such command {name!r}. Conversion is its own program: segnext-convert SRC DST")
            if guess is not None:
                ctx.fail(f"No such command {name!r}. Did you mean {guess!r}? (segnext-hub {guess} --help)")
        return super().resolve_command(ctx, args)


@click.group(cls=SuggestingGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
