"""Atomic file writes and hashing: the one place that decides how bytes reach disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from .errors import BadInputError

PathLike = Union[str, "os.PathLike[str]"]
CHUNK = 1 << 20


def check_destination(path: PathLike, *, force: bool = False) -> Path:
    """Fail before any work when ``path`` cannot (or, without ``force``, must not) be written."""
    target = Path(path)
    if target.is_dir():
        raise BadInputError(f"output path {target} is a directory")
    if target.exists() and not force:
        raise BadInputError(f"{target} already exists (use --force to overwrite)")
    if not target.parent.is_dir():
        raise BadInputError(f"output directory {target.parent} does not exist")
    return target


@contextlib.contextmanager
def atomic_writer(path: PathLike, *, force: bool = False, mode: str = "wb") -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it into place on success.

    On any exception the temp file is removed and an existing ``path`` is untouched.
    Without ``force`` an existing ``path`` is an error (checked before writing).
    """
    target = check_destination(path, force=force)
    parent = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes, *, force: bool = False) -> None:
    with atomic_writer(path, force=force) as handle:
        handle.write(data)


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
