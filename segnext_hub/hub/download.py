"""HTTP download engine: stream + SHA-256, resume, retry, inter-process lock, mirror, progress.

Checkpoints are hundreds of MB on hosts that drop connections, so one call to
:func:`download` must survive flaky networks, be resumable after a crash or ``kill -9``,
never leave a corrupt file at ``dest``, and never download the same file twice when several
processes ask for it at once. The pieces, in the order a byte meets them:

* ``dest.lock``     an ``flock`` taken for the whole download; waiters that get it after the
                    file appeared return the file without touching the network.
* ``dest.partial``  the bytes received so far. A later call (or retry) continues it with
                    ``Range: bytes=N-``; a server that ignores Range restarts it from zero.
* ``dest.partial.meta``  which URL the partial came from and the server's validator
                    (strong ETag or Last-Modified), sent as ``If-Range`` so a file that
                    changed on the server restarts cleanly instead of being spliced.
* ``dest``          appears only by an atomic rename after the size (Content-Length) and,
                    when given, the SHA-256 matched.

The hash is computed while streaming, on a worker thread that also writes to disk, so the
socket keeps being read while the previous chunk is hashed (hashlib and file writes release
the GIL); on resume the existing prefix is hashed once.

Retries are split by what they need. Error *statuses* (408, 425, 429, 5xx) are retried by
urllib3's ``Retry`` mounted on the session: exponential backoff and ``Retry-After`` (seconds
or an HTTP date, capped at MAX_RETRY_AFTER). Failures *mid-body* (drops, timeouts, short
bodies) are ours, because only we know the partial file: the next request continues it with
``Range``/``If-Range``, and each attempt that made progress resets the count.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import queue
import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..errors import BadInputError, DownloadError, OfflineError, one_line
from ..fileio import sha256_file
from ..progress import progress_bar
from .cache import file_lock, is_offline, offline_variable

CHUNK = 1 << 20  # big reads keep Python overhead negligible next to the kernel copies
QUEUE_DEPTH = 8  # chunks in flight between the socket reader and the hash/write worker
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0
TRANSIENT_STATUS = frozenset({408, 425, 429, *range(500, 600)})

PathLike = Union[str, "os.PathLike[str]"]


# -- URLs -------------------------------------------------------------------------------------


def mirror_url(url: str) -> str:
    """Rewrite ``scheme://HOST/PATH?QUERY`` to ``$SEGNEXT_HUB_MIRROR/HOST/PATH?QUERY``.

    Keeping the original host in the path lets one mirror (or one loopback test server) stand
    in for every upstream host at once. Unset or empty: the URL is returned unchanged.
    """
    mirror = os.environ.get("SEGNEXT_HUB_MIRROR", "").strip()
    if not mirror:
        return url
    base = urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise BadInputError(f"SEGNEXT_HUB_MIRROR must look like http://HOST:PORT, got {mirror!r}")
    parts = urlsplit(url)
    if not parts.netloc:
        raise BadInputError(f"cannot mirror {url!r}: not an absolute URL")
    host = parts.netloc.rsplit("@", 1)[-1]  # never forward credentials to a mirror
    query = f"?{parts.query}" if parts.query else ""
    return f"{mirror.rstrip('/')}/{host}{parts.path or '/'}{query}"


# -- public result ----------------------------------------------------------------------------


@dataclass
class DownloadResult:
    path: Path
    sha256: str
    size: int
    resumed: bool  # part of the file came from an earlier, interrupted attempt or run
    downloaded: bool  # False: the file was already there (another process finished it)


# -- internal signals -------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth retrying (dropped connection, timeout, short body); resume from the partial."""


class _StatusRetry(Retry):
    """urllib3's Retry, with Retry-After capped: a server asking for an hour should not hang us."""

    def get_retry_after(self, response: Any) -> Optional[float]:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


# Errors of session.get() worth a retry; other RequestExceptions (bad URL, redirect loop) are not.
_REQUEST_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
# Errors while reading the body. OSError covers socket resets and timeouts; write errors
# cannot land here because the writer thread turns them into DownloadError.
_READ_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,  # ProtocolError, IncompleteRead, ReadTimeoutError
    http.client.HTTPException,  # IncompleteRead of a chunked body
    OSError,
)


# -- the partial file and what it came from -------------------------------------------------


@dataclass
class _Partial:
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


class _Sink:
    """Hashes and appends chunks on a worker thread, in order, from a small buffer pool.

    The socket reader fills pool buffers with ``readinto`` (one copy out of the kernel) while
    the worker hashes and writes the previous ones. ``close()`` waits until every buffer
    handed over is on disk and in the hash, so after any failure the partial file and
    ``hasher`` still describe the same bytes and a resume is safe.
    """

    def __init__(self, partial: _Partial, truncate: bool) -> None:
        self._partial = partial
        self._handle = open(partial.path, "wb" if truncate else "ab")
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
            self._handle.flush()
        finally:
            self._handle.close()

    def _drain(self) -> None:
        if self._thread.is_alive():
            self._full.put(None)
            self._thread.join()

    def _check(self) -> None:
        if self._error is not None:
            message = f"cannot write {self._partial.path}: {self._error}"
            raise DownloadError(message) from self._error


# -- one HTTP request -------------------------------------------------------------------------


@dataclass
class _Request:
    """Everything one attempt needs; kept across attempts of one download() call."""

    session: requests.Session
    url: str  # what we fetch (after the mirror)
    shown: str  # what error messages call it
    timeout: float
    bar: Any
    retries: int
    use_range: bool = True


def _fetch(req: _Request, partial: _Partial) -> None:
    """One GET that continues ``partial``; returns when the body is complete.

    Raises _Transient for anything a retry may fix; DownloadError for what it cannot.
    """
    offset = partial.size if req.use_range else 0
    headers = {}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        if partial.validator:
            headers["If-Range"] = partial.validator
    try:
        resp = req.session.get(req.url, headers=headers, stream=True, timeout=req.timeout)
    except requests.exceptions.SSLError as err:
        raise DownloadError(f"TLS error fetching {req.shown}: {one_line(err)}") from err
    except _REQUEST_ERRORS as err:
        raise _Transient(f"connection failed: {one_line(err)}") from err
    except requests.exceptions.RequestException as err:  # bad URL, redirect loop...
        raise DownloadError(f"cannot fetch {req.shown}: {one_line(err)}") from err
    with contextlib.closing(resp):
        start = _check_status(resp, req, partial, offset)
        if start is None:  # 416 and the partial already holds the whole file
            return
        _receive(resp, req, partial, start)


def _check_status(resp: requests.Response, req: _Request, partial: _Partial, offset: int) -> Optional[int]:
    """Decide where the body starts in the file; None means nothing more to read."""
    status = resp.status_code
    if status == 206 and offset > 0:
        start, total = _content_range(resp)
        if start != offset:
            partial.reset()
            req.use_range = False  # the server's ranges cannot be trusted
            raise _Transient(f"server sent bytes from {start} when asked for {offset}")
        if None not in (total, partial.total) and total != partial.total:
            partial.reset()  # the file changed size: the partial belongs to an old version
            raise _Transient(f"file size changed from {partial.total} to {total}; restarting")
        partial.total = total if total is not None else partial.total
        partial.resumed = True
        return offset
    if status in (200, 206):  # 206 without our Range would be odd, but the body is whole
        return 0
    if status == 416 and offset > 0:
        _, total = _content_range(resp)
        if total is not None and total == partial.size:
            partial.resumed = True
            return None
        partial.reset()
        raise _Transient(f"HTTP 416 for a {offset}-byte partial (server has {total}); restarting")
    if status in TRANSIENT_STATUS:  # urllib3's Retry already spent its retries on it
        raise DownloadError(f"download of {req.shown} failed after {req.retries} retries: HTTP {status} "
                            f"{resp.reason or ''}".strip())
    raise DownloadError(f"HTTP {status} {resp.reason or ''} for {req.shown}".replace("  ", " "))


def _receive(resp: requests.Response, req: _Request, partial: _Partial, start: int) -> None:
    """Stream the body into the partial, starting at byte ``start`` of the file."""
    if start == 0:  # fresh file, or the server ignored our Range
        partial.resumed = False
        partial.hasher = hashlib.sha256()
        partial.size = 0
        partial.total = _body_length(resp)
        partial.validator = _validator(resp)
        partial.write_meta()
        if _encoded(resp):  # Range would count encoded bytes, not the ones we store
            req.use_range = False
        req.bar.reset(total=partial.total)
    elif req.bar.total != partial.total:
        req.bar.total = partial.total
    sink = _Sink(partial, truncate=start == 0)
    try:
        _pump(resp, sink, req.bar)
    except _READ_ERRORS as err:
        sink.close()
        raise _Transient(f"connection lost at byte {partial.size}: {one_line(err)}") from err
    except BaseException:
        sink.close()
        raise
    sink.close()
    if partial.total is not None and partial.size != partial.total:
        raise _Transient(f"connection closed at byte {partial.size} of {partial.total}")


def _pump(resp: requests.Response, sink: _Sink, bar: Any) -> None:
    """Move the body into the sink, keeping every byte that arrived before a failure."""
    source = _raw_source(resp)
    if source is None:  # content-encoded: let urllib3 decode (one more copy per chunk)
        read = resp.raw.read
        source = lambda view: _copy_into(view, read(len(view), decode_content=True))  # noqa: E731
    while True:
        buf = sink.buffer()
        n, err = _fill(source, buf)
        sink.commit(buf, n)
        bar.update(n)
        if err is not None:
            raise err
        if n < len(buf):
            return


def _fill(source: Callable[[memoryview], int], buf: bytearray) -> tuple[int, Optional[BaseException]]:
    """Fill ``buf`` or reach the end of the body; on failure also say how far it got."""
    view = memoryview(buf)
    got = 0
    try:
        while got < len(view):
            k = source(view[got:])
            if not k:
                break
            got += k
    except http.client.IncompleteRead as err:  # chunked body cut: its whole chunks are in view
        kept = err.partial if isinstance(err.partial, (bytes, bytearray)) else b""  # urllib3's: int
        return got + len(kept), err
    except BaseException as err:  # Ctrl-C too: keep the bytes that arrived, then re-raise
        return got, err
    return got, None


def _raw_source(resp: requests.Response) -> Optional[Callable[[memoryview], int]]:
    """``http.client``'s own readinto, skipping urllib3's copies, when bytes pass unchanged.

    A short body then reads as end-of-file rather than an exception; _receive compares the
    byte count with Content-Length, so truncation is still caught.
    """
    if _encoded(resp):
        return None
    fp = getattr(resp.raw, "_fp", None)
    return getattr(fp, "readinto", None)


def _copy_into(view: memoryview, data: bytes) -> int:
    view[: len(data)] = data
    return len(data)


# -- response helpers -------------------------------------------------------------------------

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


def _content_range(resp: requests.Response) -> tuple[Optional[int], Optional[int]]:
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if match is None:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _encoded(resp: requests.Response) -> bool:
    """Compressed on the wire although we asked for identity: urllib3 decodes it."""
    return resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


def _body_length(resp: requests.Response) -> Optional[int]:
    """The file size, when the server told it in a way that survives decoding."""
    if _encoded(resp):
        return None
    _, total = _content_range(resp)
    if total is not None:
        return total
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _validator(resp: requests.Response) -> Optional[str]:
    """A strong ETag or Last-Modified: what If-Range accepts to prove the file is unchanged."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


# -- the loop ---------------------------------------------------------------------------------


def _normalise_sha(expected: Optional[str]) -> Optional[str]:
    if expected is None:
        return None
    value = expected.strip().lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise BadInputError(f"expected_sha256 must be 64 hex digits, got {expected!r}")
    return value


def _retrying(attempt: Callable[[], None], partial: _Partial, *, retries: int, backoff: float, shown: str) -> None:
    """Call ``attempt`` until it succeeds; each failure that made no progress uses a retry.

    Progress resets the count, so a long file on a link that drops every few hundred MB still
    finishes, while a server that fails the same way every time gives up after ``retries``.
    """
    failures = 0
    while True:
        before = partial.size
        try:
            attempt()
            return
        except _Transient as err:
            failures = 0 if partial.size > before else failures + 1
            if failures > retries:
                raise DownloadError(f"download of {shown} failed after {retries} retries: {err}") from err
            delay = min(backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF)
            time.sleep(delay * random.uniform(0.75, 1.0))


def _finish(partial: _Partial, dest: Path, expected: Optional[str], shown: str) -> DownloadResult:
    """Verify, then make the file visible at ``dest`` in one atomic step."""
    got = partial.hasher.hexdigest()
    size = partial.size
    if expected is not None and got != expected:
        partial.reset()
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        raise DownloadError(
            f"sha256 mismatch for {shown}: expected {expected[:12]}…, got {got[:12]}… "
            "(file deleted)"
        )
    _fsync(partial.path)  # data on disk before the rename, or a power cut could leave an empty file
    os.replace(partial.path, dest)
    with contextlib.suppress(OSError):  # the rename itself; best effort where folders cannot be opened
        _fsync(dest.parent)
    with contextlib.suppress(FileNotFoundError):
        partial.meta_path.unlink()
    return DownloadResult(dest, got, size, resumed=partial.resumed, downloaded=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _already_there(dest: Path, expected: Optional[str]) -> Optional[DownloadResult]:
    """A finished file only ever appears by rename, so if it exists it is complete.

    If it does not have the hash the caller wants it is removed and downloaded again.
    """
    try:
        got = sha256_file(dest)
    except FileNotFoundError:
        return None
    if expected is not None and got != expected:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        return None
    return DownloadResult(dest, got, dest.stat().st_size, resumed=False, downloaded=False)


def _session(retries: int, backoff: float) -> requests.Session:
    """A session whose adapters retry error statuses (not connection errors: _retrying resumes)."""
    from .._version import __version__

    session = requests.Session()
    status_retry = _StatusRetry(
        total=None, connect=0, read=0, other=0, status=retries, status_forcelist=TRANSIENT_STATUS,
        allowed_methods={"GET"}, backoff_factor=backoff, backoff_max=MAX_BACKOFF,
        respect_retry_after_header=True, raise_on_status=False,
    )
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=status_retry))
    # identity: Range offsets and Content-Length must count the bytes we store.
    session.headers.update({"User-Agent": f"segnext-hub/{__version__}", "Accept-Encoding": "identity"})
    return session


def download(
    url: str,
    dest: PathLike,
    *,
    expected_sha256: Optional[str] = None,
    progress: Optional[bool] = None,
    retries: int = 5,
    timeout: float = 30.0,
    backoff: float = 0.5,
    desc: Optional[str] = None,
) -> DownloadResult:
    """Download ``url`` (through ``SEGNEXT_HUB_MIRROR`` if set) to ``dest``, verified.

    ``dest`` is either absent or complete (and matches ``expected_sha256`` when given) when
    this returns or raises. An existing ``dest`` is returned without network, in offline mode
    too. Otherwise offline mode raises OfflineError; HTTP 4xx (except 408/425/429) raises
    DownloadError at once; 408/425/429/5xx are retried up to ``retries`` times with
    exponential ``backoff`` (or the server's Retry-After); connection errors, timeouts and
    short bodies too, each resuming from the partial file.
    ``timeout`` bounds the connect and each socket read, not the whole transfer.
    """
    dest = Path(dest)
    expected = _normalise_sha(expected_sha256)
    fetch_url = mirror_url(url)
    shown = fetch_url if fetch_url == url else f"{fetch_url} (mirror of {url})"
    existing = _already_there(dest, expected)
    if existing is not None:
        return existing
    if is_offline():
        raise OfflineError(f"{offline_variable()} is set: not downloading {url} (not in the cache)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        existing = _already_there(dest, expected)  # another process may have finished it
        if existing is not None:
            return existing
        partial = _Partial(dest=dest, url=url)
        partial.load()
        bar = progress_bar(partial.total, desc or dest.name, progress, unit="B", initial=partial.size)
        with _session(retries, backoff) as session, bar:
            req = _Request(session=session, url=fetch_url, shown=shown, timeout=timeout, bar=bar,
                           retries=retries)
            _retrying(lambda: _fetch(req, partial), partial, retries=retries, backoff=backoff, shown=shown)
        return _finish(partial, dest, expected, shown)
