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

Nothing on the wire is trusted (see :mod:`.netlimits`): a body never grows the file past the
size the registry records, the size the server announced or a documented cap; a compressed
``Content-Encoding`` is refused (we ask for identity, and a 4 MB gzip can expand to 4 GiB);
a stalled transfer is retried, an overall deadline ends the call; a DNS failure or a refused
connection fails at once with the next step; a full disk deletes the partial and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import random
import re
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
from .netlimits import Limits, Stalled, unreachable
from .partial import CHUNK, Partial as _Partial, Sink as _Sink, WriteFailed as _WriteFailed
from .partial import write_failed as _write_failed

__all__ = ["CHUNK", "DownloadResult", "download", "mirror_url"]

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
    """A failure worth retrying (dropped connection, timeout, short body); resume from the partial.

    ``stalled``: the bytes that came were too few to count as progress (a trickle), so the
    attempt uses a retry even though the partial grew.
    """

    def __init__(self, message: str, stalled: bool = False) -> None:
        super().__init__(message)
        self.stalled = stalled


class _TooBig(Exception):
    """The body ran past the most bytes the file may have."""


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


# -- one HTTP request -------------------------------------------------------------------------


@dataclass
class _Request:
    """Everything one attempt needs; kept across attempts of one download() call."""

    session: requests.Session
    url: str  # what we fetch (after the mirror)
    original: str  # the published URL
    shown: str  # what error messages call it
    limits: Limits
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
        resp = req.session.get(req.url, headers=headers, stream=True, timeout=req.limits.stall)
    except requests.exceptions.SSLError as err:
        raise DownloadError(f"TLS error fetching {req.shown}: {one_line(err)}") from err
    except _REQUEST_ERRORS as err:
        fatal = unreachable(err, req.url, req.original)
        if fatal is not None:  # no network or a wrong mirror: waiting will not fix it
            raise fatal from None
        raise _Transient(f"connection failed: {one_line(err)}") from err
    except requests.exceptions.RequestException as err:  # bad URL, redirect loop...
        raise DownloadError(f"cannot fetch {req.shown}: {one_line(err)}") from err
    with contextlib.closing(resp):
        if resp.status_code in (200, 206) and _encoded(resp):
            encoding = one_line(resp.headers.get("Content-Encoding", ""), 40)
            raise DownloadError(f"{req.shown} was sent with Content-Encoding {encoding} although identity was "
                                "asked; refused (a compressed body can expand without bound)")
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
    allowed = req.limits.allowed(_body_length(resp) if start == 0 else partial.total)
    try:
        if start == 0:  # fresh file, or the server ignored our Range
            partial.resumed = False
            partial.hasher = hashlib.sha256()
            partial.size = 0
            partial.total = _body_length(resp)
            partial.validator = _validator(resp)
            try:
                partial.write_meta()
            except OSError as err:
                raise _write_failed(partial, err) from None
            req.bar.reset(total=partial.total)
        elif req.bar.total != partial.total:
            req.bar.total = partial.total
        _stream(resp, req, partial, start, allowed)
    except _WriteFailed:
        partial.reset()
        raise
    if partial.total is not None and partial.size != partial.total:
        raise _Transient(f"connection closed at byte {partial.size} of {partial.total}")


def _stream(resp: requests.Response, req: _Request, partial: _Partial, start: int, allowed: int) -> None:
    """Pump the body into a sink; turn read failures and stalls into retries, excess into refusal."""
    sink = _Sink(partial, truncate=start == 0)
    req.limits.start_window()
    try:
        _pump(resp, sink, req.bar, req.limits, start, allowed)
    except Stalled as err:
        sink.close()
        raise _Transient(f"{err} at byte {partial.size}", stalled=True) from err
    except _READ_ERRORS as err:
        sink.close()
        raise _Transient(f"connection lost at byte {partial.size}: {one_line(err)}") from err
    except _TooBig:
        sink.close()
        partial.reset()
        raise req.limits.too_big(allowed) from None
    except BaseException:
        sink.close()
        raise
    sink.close()


def _pump(resp: requests.Response, sink: _Sink, bar: Any, limits: Limits, pos: int, allowed: int) -> None:
    """Move the body into the sink, keeping every byte that arrived before a failure.

    At most ``allowed`` bytes of file reach the sink: each read asks for one byte more than
    may still come, so a body that goes on is noticed without storing its excess.
    """
    source = _raw_source(resp)
    while True:
        buf = sink.buffer()
        want = min(len(buf), allowed - pos + 1)
        n, err = _fill(source, memoryview(buf)[:want], limits)
        if pos + n > allowed:
            sink.commit(buf, allowed - pos)
            raise _TooBig()
        sink.commit(buf, n)
        bar.update(n)
        pos += n
        if err is not None:
            raise err
        if n < want:
            return


def _fill(source: Callable[[memoryview], int], view: memoryview,
          limits: Limits) -> tuple[int, Optional[BaseException]]:
    """Fill ``view`` or reach the end of the body; on failure also say how far it got."""
    got = 0
    try:
        while got < len(view):
            k = source(view[got:])
            if not k:
                break
            got += k
            limits.tick(k)
    except http.client.IncompleteRead as err:  # chunked body cut: its whole chunks are in view
        kept = err.partial if isinstance(err.partial, (bytes, bytearray)) else b""  # urllib3's: int
        return got + len(kept), err
    except BaseException as err:  # Ctrl-C too: keep the bytes that arrived, then re-raise
        return got, err
    return got, None


def _raw_source(resp: requests.Response) -> Callable[[memoryview], int]:
    """``http.client``'s own ``read1``, skipping urllib3's layers (the body is never encoded:
    an encoded one is refused before this).

    ``read1`` returns as soon as the socket has bytes, so a trickling server cannot keep
    one read busy past the stall window (``readinto`` would wait for a whole buffer). A
    short body reads as end-of-file rather than an exception; _receive compares the byte
    count with Content-Length, so truncation is still caught.
    """
    fp = getattr(resp.raw, "_fp", None)
    read1 = getattr(fp, "read1", None) or getattr(resp.raw, "read1", None)
    return lambda view: _copy_into(view, read1(len(view)))


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
    """Compressed on the wire although we asked for identity (then refused)."""
    return resp.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


def _body_length(resp: requests.Response) -> Optional[int]:
    """The file size, when the server told it."""
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


def _retrying(attempt: Callable[[], None], partial: _Partial, *, retries: int, backoff: float, shown: str,
              limits: Limits) -> None:
    """Call ``attempt`` until it succeeds; each failure that made no progress uses a retry.

    Progress resets the count, so a long file on a link that drops every few hundred MB still
    finishes, while a server that fails the same way every time gives up after ``retries``.
    """
    failures = 0
    while True:
        limits.check_deadline()
        before = partial.size
        try:
            attempt()
            return
        except _Transient as err:
            failures = 0 if partial.size > before and not err.stalled else failures + 1
            if failures > retries:
                raise DownloadError(f"download of {shown} failed after {retries} retries: {err}") from err
            delay = min(backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF)
            time.sleep(max(0.0, min(delay * random.uniform(0.75, 1.0), limits.remaining())))


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
    expected_size: Optional[int] = None,
    max_bytes: Optional[int] = None,
    progress: Optional[bool] = None,
    retries: int = 5,
    timeout: Optional[float] = None,
    deadline: Optional[float] = None,
    backoff: float = 0.5,
    desc: Optional[str] = None,
) -> DownloadResult:
    """Download ``url`` (through ``SEGNEXT_HUB_MIRROR`` if set) to ``dest``, verified and bounded.

    ``dest`` is either absent or complete (and matches ``expected_sha256`` when given) when
    this returns or raises. An existing ``dest`` is returned without network, in offline mode
    too. Bounds (:mod:`.netlimits`) hold whatever the server does, because a mirror or a
    proxy may be hostile or broken.

    Args:
        url: the published URL (rewritten by ``SEGNEXT_HUB_MIRROR``).
        dest: where the finished file appears, by an atomic rename.
        expected_sha256: enforced when given; a mismatch deletes the download.
        expected_size: the size the registry records; a server announcing another size, or a
            body longer than it, is refused.
        max_bytes: the cap when no size is known (default ``SEGNEXT_HUB_MAX_DOWNLOAD_MB``).
        progress: show a progress bar (None: on a terminal).
        retries: failures without progress tolerated (statuses 408/425/429/5xx, drops,
            timeouts, stalls), each resuming from the partial file.
        timeout: the stall timeout in seconds: connect, each read, and the window in which
            some progress must be made (default ``SEGNEXT_HUB_STALL_TIMEOUT``, 30).
        deadline: seconds for the whole call, retries included (default
            ``SEGNEXT_HUB_DOWNLOAD_DEADLINE``, 7200).
        backoff: the first retry's delay; doubled per failure.
        desc: the progress bar's label.

    Returns:
        DownloadResult with the measured sha256 and size.

    Raises:
        OfflineError: offline mode is on and ``dest`` does not exist.
        UnreachableError: DNS failure or refused connection (not retried; the message names
            the host and the next step).
        DownloadError: HTTP 4xx (except 408/425/429), retries exhausted, a hash mismatch, a
            refused Content-Encoding or size, the deadline, or a failed write (the partial is
            then deleted).
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
    limits = Limits.create(shown, max_bytes=max_bytes, known_size=expected_size, stall=timeout, deadline=deadline)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(dest.name + ".lock")):
        existing = _already_there(dest, expected)  # another process may have finished it
        if existing is not None:
            return existing
        partial = _Partial(dest=dest, url=url)
        partial.load()
        bar = progress_bar(partial.total, desc or dest.name, progress, unit="B", initial=partial.size)
        with _session(retries, backoff) as session, bar:
            req = _Request(session=session, url=fetch_url, original=url, shown=shown, limits=limits, bar=bar,
                           retries=retries)
            _retrying(lambda: _fetch(req, partial), partial, retries=retries, backoff=backoff, shown=shown,
                      limits=limits)
        return _finish(partial, dest, expected, shown)
