"""``segnext-hub push``: publish an artifact or a local checkpoint as a Hugging Face Hub repo."""

from __future__ import annotations

from typing import Optional

import click

from .common import command_options, shown


@click.command()
@click.argument("name_or_path")
@click.option("--repo", "repo_id", metavar="ORG/NAME",
              help="Target Hub repo, created if missing. Required unless --folder-only.")
@click.option("--private", is_flag=True, help="Create the repo private (no effect on an existing repo).")
@click.option("--token", metavar="TOKEN", envvar="HF_TOKEN", show_envvar=True,
              help="Hub token with write access (default: HF_TOKEN, else the token saved by `hf auth login`).")
@click.option("--endpoint", metavar="URL",
              help="Hub URL (default: HF_ENDPOINT, else https://huggingface.co).")
@click.option("-m", "--message", "commit_message", metavar="TEXT", help="Commit message.")
@click.option("--folder-only", "folder", metavar="DIR", type=click.Path(file_okay=False),
              help="Write the folder to DIR for review and upload nothing.")
@click.option("--force", is_flag=True, help="With --folder-only: replace DIR when it is an earlier export (never other folders).")
@command_options
def push(name_or_path: str, repo_id: Optional[str], private: bool, token: Optional[str],
         endpoint: Optional[str], commit_message: Optional[str], folder: Optional[str], force: bool) -> None:
    """Publish NAME_OR_PATH on the Hugging Face Hub; print the repo URL.

    NAME_OR_PATH is a registry name (see `segnext-hub list`; pulled into the cache if
    needed), a local checkpoint in any layout segnext-convert reads (converted to MMSeg
    names, with verification), or a folder holding model.safetensors + config.json, such
    as one written by --folder-only (its README.md is uploaded as it is, edits included).

    The repo gets model.safetensors, config.json (the cache's schema) and a model card
    README.md with the reported metrics and their source, provenance, licence, the NMF
    rank MD_R and where it comes from, and the seed caveat. Read it back with
    segnext_hub.load("hf://ORG/NAME").

    \b
    Review first, then publish what you reviewed:
      segnext-hub push mscan-t --repo me/segnext-t --folder-only out/segnext-t
      segnext-hub push out/segnext-t --repo me/segnext-t

    Exit codes: 0 done, 1 conversion verification failed, 2 bad input, auth or network
    error (one line on stderr; --debug shows the traceback).
    """
    from ..errors import BadInputError
    from ..tasks.publish import export_folder
    from ..tasks.publish import push as push_to_hub

    if folder is not None:
        out = export_folder(name_or_path, folder, force=force, repo_id=repo_id)
        click.echo(shown(out))
        click.echo(f"review {out}/README.md, then: segnext-hub push {out} --repo {repo_id or 'ORG/NAME'}",
                   err=True)
        return
    if not repo_id:
        raise BadInputError("--repo ORG/NAME is required (or use --folder-only DIR to only write the folder)")
    if force:
        raise BadInputError("--force only applies with --folder-only (pushing always adds a new commit)")
    click.echo(push_to_hub(name_or_path, repo_id, private=private, token=token, endpoint=endpoint,
                           commit_message=commit_message))
