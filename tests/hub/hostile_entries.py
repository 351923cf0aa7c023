"""Cache entries a group member could craft in a shared (group-writable) cache.

Each case edits one complete entry so that its manifest points at something outside it:
an absolute path, ``../``, a symlink leading out, ``/dev/zero`` through a symlink, a FIFO.
``outside`` is a folder beside the cache holding ``private.txt`` (must never be deleted or
changed) and ``pipe`` (a FIFO: opening it for reading blocks, so any command that reads
it hangs and the test's timeout catches it). Edits replace the manifest by rename, as a
group member must (cache files are read-only); used in-process and by a second user's
subprocess (tests/hub/test_sharing.py).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable

ZERO_SHA = "0" * 64


def make_outside(outside: Path) -> None:
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "private.txt").write_text("private\n")
    if not (outside / "pipe").exists():
        os.mkfifo(outside / "pipe")


def _rewrite(folder: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    tmp = folder / ".manifest.edit"
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, folder / "manifest.json")


def _claim(rel: str, *, log: bool = True) -> Callable[[dict], None]:
    """The manifest vouches for ``rel`` with a wrong size (a repair would delete it) and,
    with ``log``, names it the training log (info and log would read it)."""
    def change(manifest: dict) -> None:
        manifest["files"][rel] = {"size": 1, "sha256": ZERO_SHA}
        if log:
            manifest["log_file"] = rel
    return change


def _link(folder: Path, name: str, target: str) -> None:
    path = folder / name
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(target, path)


def absolute_path(folder: Path, outside: Path) -> None:
    _rewrite(folder, _claim(str(outside / "private.txt")))


def dot_dot(folder: Path, outside: Path) -> None:
    rel = os.path.relpath(outside / "private.txt", folder)
    assert rel.startswith("..")
    _rewrite(folder, _claim(rel))


def raw_file_out(folder: Path, outside: Path) -> None:
    def change(manifest: dict) -> None:
        manifest["raw_file"] = str(outside / "private.txt")
    _rewrite(folder, change)


def symlink_out(folder: Path, outside: Path) -> None:
    _link(folder, "raw/evil.log", str(outside / "private.txt"))
    _rewrite(folder, _claim("raw/evil.log"))


def symlinked_subfolder(folder: Path, outside: Path) -> None:
    """``raw`` itself replaced by a link to the outside folder: a plain name, a foreign file."""
    raw = folder / "raw"
    os.rename(raw, folder / ".raw-moved")
    os.symlink(str(outside), raw)
    _rewrite(folder, _claim("raw/private.txt"))


def dev_zero(folder: Path, outside: Path) -> None:
    _link(folder, "zero.log", "/dev/zero")
    _rewrite(folder, _claim("zero.log"))


def fifo_inside(folder: Path, outside: Path) -> None:
    os.mkfifo(folder / "fifo.log")
    _rewrite(folder, _claim("fifo.log"))


def fifo_outside(folder: Path, outside: Path) -> None:
    _link(folder, "pipe.log", str(outside / "pipe"))
    _rewrite(folder, _claim("pipe.log"))


def weights_link(folder: Path, outside: Path) -> None:
    """model.safetensors swapped for a link (with the size the manifest records)."""
    os.replace(folder / "model.safetensors", folder / ".model-moved")
    (outside / "weights").write_bytes(b"x" * (folder / ".model-moved").stat().st_size)
    os.symlink(str(outside / "weights"), folder / "model.safetensors")


def entry_is_a_link(folder: Path, outside: Path) -> None:
    """The whole entry folder replaced by a link to the outside folder, holding a manifest
    that vouches for private.txt."""
    os.rename(folder, folder.with_name(f".moved-entry-{secrets.token_hex(4)}"))
    (outside / "manifest.json").write_text(json.dumps({
        "manifest_version": 2, "complete": True, "name": folder.name, "model_file": "model.safetensors",
        "files": {"private.txt": {"size": 1, "sha256": ZERO_SHA}}, "log_file": "private.txt"}))
    os.symlink(str(outside), folder)


CASES: dict[str, Callable[[Path, Path], None]] = {
    "absolute": absolute_path, "dot-dot": dot_dot, "raw-file-out": raw_file_out, "symlink-out": symlink_out,
    "symlinked-subfolder": symlinked_subfolder, "dev-zero": dev_zero, "fifo-inside": fifo_inside,
    "fifo-outside": fifo_outside, "weights-link": weights_link, "entry-is-a-link": entry_is_a_link,
}


def outside_intact(outside: Path) -> bool:
    return (outside / "private.txt").read_text() == "private\n" and (outside / "pipe").exists()
