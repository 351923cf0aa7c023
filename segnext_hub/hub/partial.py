"""The partial file of a download and the worker thread that hashes and writes it.

See :mod:`.download` for the whole engine. ``Partial`` is the on-disk prefix plus the hash of
exactly its bytes (so a resume is safe after any failure); ``Sink`` appends chunks on a
worker thread while the socket keeps being read. A write that fails (a full disk) turns into
:class:`WriteFailed`, one line naming the file, and the caller deletes the partial.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import DownloadError, one_line

CHUNK = 1 << 20  # big reads keep Python overhead negligible next to the kernel copies
QUEUE_DEPTH = 8  # chunks in flight between the socket reader and the hash/write worker


class WriteFailed(DownloadError):
    """The partial file could not be written (disk full, permissions): the partial is deleted."""


# -- the partial file and what it came from -------------------------------------------------


@dataclass
class Partial:
    """The on-disk partial plus the in-memory hash that always matches its bytes."""

    dest: Path
    url: str
    hasher: Any = None
    size: int = 0
    total: Optional[int] = None
    validator: Optional[str] = None
    resumed: bool = False

    @property
    def path(self) -> Path:
        return self.dest.with_name(self.dest.name + ".partial")

    @property
    def meta_path(self) -> Path:
        return self.dest.with_name(self.dest.name + ".partial.meta")

    def load(self) -> None:
        """Adopt a partial left by an earlier run, unless it came from another URL."""
        self.hasher = hashlib.sha256()
        self.size = 0
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            self.reset()  # only a regular file we wrote is continued, never a device or a link
        if not self.path.exists():
            return
        meta = self._read_meta()
        if meta is not None and meta.get("url") != self.url:
            self.reset()
            return
        if meta is not None:
            self.validator = meta.get("validator")
            self.total = meta.get("total")
        with open(self.path, "rb") as handle:  # the one pass over the old prefix
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                self.hasher.update(chunk)
                self.size += len(chunk)

    def _read_meta(self) -> Optional[dict]:
        try:
            data = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_meta(self) -> None:
        """Record origin before the first byte lands, so no partial is ever anonymous."""
        data = {"url": self.url, "validator": self.validator, "total": self.total}
        tmp = self.meta_path.with_name(self.meta_path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.meta_path)

    def reset(self) -> None:
        """Forget everything received: the partial is wrong or belongs to something else."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.meta_path.unlink()
        self.hasher = hashlib.sha256()
        self.size = 0
        self.total = None
        self.validator = None
        self.resumed = False


# -- the worker that hashes and writes --------------------------------------------------------


class Sink:
    """Hashes and appends chunks on a worker thread, in order, from a small buffer pool.

    The socket reader fills pool buffers (one copy out of the kernel) while
    the worker hashes and writes the previous ones. ``close()`` waits until every buffer
    handed over is on disk and in the hash, so after any failure the partial file and
    ``hasher`` still describe the same bytes and a resume is safe.
    """

    def __init__(self, partial: Partial, truncate: bool) -> None:
        self._partial = partial
        try:
            self._handle = open(partial.path, "wb" if truncate else "ab")
        except OSError as err:
            raise write_failed(partial, err) from None
        self._free: "queue.Queue[bytearray]" = queue.Queue()
        for _ in range(QUEUE_DEPTH):
            self._free.put(bytearray(CHUNK))
        self._full: "queue.Queue[Optional[tuple[bytearray, int]]]" = queue.Queue()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="segnext-hub-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            buf, n = item
            try:
                if self._error is None:
                    view = memoryview(buf)[:n]
                    self._handle.write(view)  # write first: the hash never covers lost bytes
                    self._partial.hasher.update(view)
                    self._partial.size += n
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = err
            finally:
                self._free.put(buf)  # always: the reader must never wait forever

    def buffer(self) -> bytearray:
        """An empty buffer to read into; blocks while the worker is QUEUE_DEPTH behind."""
        self._check()
        return self._free.get()

    def commit(self, buf: bytearray, n: int) -> None:
        """Hand over the first ``n`` bytes of ``buf`` (``n`` may be 0: just give it back)."""
        if n:
            self._full.put((buf, n))
        else:
            self._free.put(buf)

    def close(self) -> None:
        self._drain()
        try:
            self._check()
            try:
                self._handle.flush()  # the last buffered bytes can be the ones that find the disk full
            except OSError as err:
                raise write_failed(self._partial, err) from None
        finally:
            with contextlib.suppress(OSError):  # the descriptor is closed even when the flush fails
                self._handle.close()

    def _drain(self) -> None:
        if self._thread.is_alive():
            self._full.put(None)
            self._thread.join()

    def _check(self) -> None:
        if self._error is not None:
            raise write_failed(self._partial, self._error) from None


def write_failed(partial: Partial, err: BaseException) -> WriteFailed:
    """One line naming the file; the caller deletes the partial so a full disk is not kept full."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return WriteFailed(f"cannot write {partial.dest}: no space left on the device (partial download "
                            "deleted; free space or point SEGNEXT_HUB_CACHE elsewhere)")
    reason = err.strerror if isinstance(err, OSError) and err.strerror else one_line(err)
    return WriteFailed(f"cannot write {partial.dest}: {reason} (partial download deleted)")
