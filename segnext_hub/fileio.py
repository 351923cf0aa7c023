"""Atomic file writes and hashing: the one place that decides how bytes reach disk."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

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


# Below this size a helper thread costs more than the hashing it overlaps.
THREADED_HASH_MIN = 32 << 20


class StreamingSha256:
    """sha256 that can run on a helper thread, so hashing overlaps reading, parsing and writing.

    ``update`` only queues a view of the data (no copy); the caller keeps that memory alive
    and unchanged until ``hexdigest``. One worker keeps the chunks in order, and
    ``sha256.update`` releases the GIL, so this is real parallelism on two cores.
    """

    def __init__(self, background: bool) -> None:
        self._digest = hashlib.sha256()
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if background else None
        self._futures: list = []

    def update(self, chunk: Any) -> None:
        if self._pool is None:
            self._digest.update(chunk)
        else:
            self._futures.append(self._pool.submit(self._digest.update, chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def hexdigest(self) -> str:
        self.close()
        for future in self._futures:
            future.result()
        self._futures.clear()
        return self._digest.hexdigest()
