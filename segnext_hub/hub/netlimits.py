"""Bounds on one download (bytes, stall, deadline) and what a failed connection means.

A mirror, a proxy or a compromised host decides what arrives on the socket, so nothing in
the download engine may depend on it behaving: every transfer is bounded in size and in
time, and a host that cannot be reached at all is named with the next step at once.

Environment (read at call time; documented in docs/reliability.md):

* ``SEGNEXT_HUB_MAX_DOWNLOAD_MB`` (default 4096): the most bytes a file may have when neither
  the registry nor the server says its size. A body that runs past the size the registry
  records, the size the server announced (Content-Length / Content-Range) or this cap is
  cut there and refused; nothing larger ever reaches the disk.
* ``SEGNEXT_HUB_STALL_TIMEOUT`` (seconds, default 30): the connect and per-read socket
  timeout, and the window in which at least :data:`STALL_MIN_BYTES` must arrive. A stalled
  transfer counts as a dropped one: retried and resumed from the partial file.
* ``SEGNEXT_HUB_DOWNLOAD_DEADLINE`` (seconds, default 7200): the whole download, retries and
  waits included. Checked between reads, so it can be overrun by at most one stall timeout.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from ..errors import BadInputError, DownloadError, UnreachableError

MAX_DOWNLOAD_ENV = "SEGNEXT_HUB_MAX_DOWNLOAD_MB"
STALL_ENV = "SEGNEXT_HUB_STALL_TIMEOUT"
DEADLINE_ENV = "SEGNEXT_HUB_DOWNLOAD_DEADLINE"
DEFAULT_MAX_DOWNLOAD_MB = 4096  # the largest published checkpoint is a few hundred MB
DEFAULT_STALL = 30.0
DEFAULT_DEADLINE = 7200.0  # hundreds of MB on a slow link, not a server trickling forever
STALL_MIN_BYTES = 64 << 10  # fewer bytes than this in one stall window: stalled


def _env_number(var: str, default: float) -> float:
    """A positive number from the environment (empty: the default); anything else is bad input."""
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise BadInputError(f"{var} must be a positive number, got {raw!r}")
    return value


def max_download_bytes() -> int:
    """The cap for a file whose size nobody announced (``SEGNEXT_HUB_MAX_DOWNLOAD_MB``)."""
    return int(_env_number(MAX_DOWNLOAD_ENV, DEFAULT_MAX_DOWNLOAD_MB) * 2**20)


def stall_timeout() -> float:
    """Seconds without enough progress before a transfer counts as stalled."""
    return _env_number(STALL_ENV, DEFAULT_STALL)


def download_deadline() -> float:
    """Seconds one :func:`~segnext_hub.hub.download.download` call may take in all."""
    return _env_number(DEADLINE_ENV, DEFAULT_DEADLINE)


class Stalled(Exception):
    """Too few bytes in one stall window: retried like a dropped connection."""


@dataclass
class Limits:
    """Size and time bounds of one download call; ``shown`` names the URL in messages."""

    shown: str
    max_bytes: int
    known_size: Optional[int]
    stall: float
    deadline_at: float
    deadline: float
    window_start: float = 0.0
    window_bytes: int = 0

    @classmethod
    def create(cls, shown: str, *, max_bytes: Optional[int], known_size: Optional[int],
               stall: Optional[float], deadline: Optional[float]) -> "Limits":
        """Explicit arguments win over the environment; ``known_size`` is the registry's."""
        cap = max_download_bytes() if max_bytes is None else int(max_bytes)
        stall = stall_timeout() if stall is None else float(stall)
        deadline = download_deadline() if deadline is None else float(deadline)
        return cls(shown, cap, known_size, stall, time.monotonic() + deadline, deadline)

    def allowed(self, announced: Optional[int]) -> int:
        """The most bytes the file may have: the registry's size, else the server's, else the cap.

        Raises:
            DownloadError: the server announces a size other than the registry's, or one
                above the cap (before a byte of the body is read).
        """
        if self.known_size is not None:
            if announced is not None and announced != self.known_size:
                raise DownloadError(f"{self.shown} announces {announced} bytes; the registry records "
                                    f"{self.known_size} (wrong or changed file, refused)")
            return self.known_size
        if announced is not None:
            if announced > self.max_bytes:
                raise DownloadError(f"{self.shown} announces {announced} bytes, over the {self.max_bytes >> 20} MiB "
                                    f"cap (raise it with {MAX_DOWNLOAD_ENV})")
            return announced
        return self.max_bytes

    def too_big(self, limit: int) -> DownloadError:
        """The error for a body that ran past ``limit`` bytes (the partial is discarded)."""
        hint = "" if limit != self.max_bytes or self.known_size is not None else f"; raise it with {MAX_DOWNLOAD_ENV}"
        return DownloadError(f"{self.shown} sent more than {limit} bytes, the most this file may have "
                             f"(refused, partial deleted{hint})")

    def start_window(self) -> None:
        self.window_start, self.window_bytes = time.monotonic(), 0

    def tick(self, n: int) -> None:
        """Account ``n`` received bytes; raise when stalled or past the deadline."""
        now = time.monotonic()
        self.window_bytes += n
        self.check_deadline(now)
        if now - self.window_start >= self.stall:
            if self.window_bytes < STALL_MIN_BYTES:
                raise Stalled(f"stalled: {self.window_bytes} bytes in {now - self.window_start:.0f} s")
            self.window_start, self.window_bytes = now, 0

    def check_deadline(self, now: Optional[float] = None) -> None:
        if (time.monotonic() if now is None else now) >= self.deadline_at:
            raise DownloadError(f"download of {self.shown} did not finish within {self.deadline:g} s "
                                f"(set {DEADLINE_ENV} to allow longer); the partial file is kept to resume")

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()


# -- a host that cannot be reached ------------------------------------------------------------


def _causes(err: BaseException):
    """The exception, its causes and contexts, and urllib3's ``reason`` chain, each once."""
    seen, todo = set(), [err]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend([getattr(item, "__cause__", None), getattr(item, "__context__", None),
                     getattr(item, "reason", None)])
        todo.extend(arg for arg in getattr(item, "args", ()) if isinstance(arg, BaseException))


def unreachable(err: BaseException, url: str, original: str) -> Optional[UnreachableError]:
    """An :class:`UnreachableError` when ``err`` is a DNS failure or a refused connection.

    Neither is fixed by waiting a few seconds (no network, a typo in a mirror, a proxy that
    is down), so they are not retried; the message is one line under 200 characters that
    names the host and the next step. Other failures (timeouts, resets) return None.
    """
    why = None
    for cause in _causes(err):
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            why = "DNS lookup failed"
            break
        if isinstance(cause, ConnectionRefusedError):
            why = "connection refused"
            break
    if why is None:
        return None
    host = urlsplit(url).netloc.rsplit("@", 1)[-1][:60]
    if url != original:  # through SEGNEXT_HUB_MIRROR: the mirror is what failed
        return UnreachableError(f"cannot reach mirror {host} ({why}): check SEGNEXT_HUB_MIRROR, or unset it "
                                "to download from the published host")
    return UnreachableError(f"cannot reach {host} ({why}): set SEGNEXT_HUB_OFFLINE=1 to use the cache, "
                            "SEGNEXT_HUB_MIRROR=URL for a mirror, or segnext-convert a local file")
