"""A loopback HTTP file server with fault injection, for download tests and benchmarks.

Tests must never touch the real network, yet a download engine is only trustworthy when it
has seen real sockets fail in the ways real hosts fail. This server serves in-memory bytes
at arbitrary paths on 127.0.0.1 (so a test can serve ``/download.openmmlab.com/...`` and
point ``SEGNEXT_HUB_MIRROR`` at it), answers Range requests (206/416) and honours If-Range
against a strong ETag like a static file server, and misbehaves on request:

    with LoopbackServer({"/a.bin": data}) as srv:
        srv.fault("/a.bin", drop_after=3_000_000)        # first GET dies mid-body
        srv.fault("/a.bin", status=503, times=2)          # ... the next two get 503
        download(srv.url("/a.bin"), dest)
        srv.ranges("/a.bin")   # [None, "bytes=3000000-", "bytes=3000000-", "bytes=3000000-"]

or use the ``http_server`` pytest fixture (tests/conftest.py).
Faults for a path are used in the order they were added: each request takes the first one
with uses left (``times``, default 1; ``None``: forever), then the path behaves normally.
Everything stops with the context manager; handler threads are daemons and give up
promptly when the server stops, so a test can never hang on a throttled response.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

_RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)$")
_INVERT = bytes(255 - i for i in range(256))


@dataclass
class Fault:
    """How to misbehave; combine knobs in one Fault to apply them to the same request."""

    times: Optional[int] = 1  # requests affected; None = every request
    status: Optional[int] = None  # answer this status (empty body) instead of the file
    drop_after: Optional[int] = None  # close the socket after this many body bytes
    corrupt: bool = False  # same length, wrong bytes
    ignore_range: bool = False  # answer 200 with the whole file even when asked a Range
    rate: Optional[float] = None  # throttle the body to about this many bytes/second
    stall: float = 0.0  # sleep this long after the headers, before the body
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    gzip: bool = False  # Content-Encoding: gzip whatever the client asked; ranges count gzip bytes
    hang_after: Optional[int] = None  # send this many body bytes, then silence (30 s or stop)
    retry_after: Optional[str] = None  # Retry-After header sent with ``status``
    used: int = 0

    def take(self) -> bool:
        """Whether this fault applies to the current request (and count it)."""
        if self.times is not None and self.used >= self.times:
            return False
        self.used += 1
        return True


@dataclass
class Request:
    method: str
    path: str
    range: Optional[str]
    accept_encoding: Optional[str] = None
    status: int = 0
    sent: int = 0  # body bytes actually written


_NO_FAULT = Fault(times=0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "LoopbackServer"

    def handle_error(self, request, client_address) -> None:  # noqa: D401
        """Clients that vanish mid-response are the point of these tests: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real hosts; needs Content-Length always
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def do_GET(self) -> None:
        self._respond(head=False)

    def _respond(self, head: bool) -> None:
        owner = self.server.owner
        record = Request(self.command, self.path, self.headers.get("Range"), self.headers.get("Accept-Encoding"))
        data, fault = owner._lookup(self.path, record)
        if data is None:
            return self._empty(record, 404)
        if fault.status is not None:
            return self._empty(record, fault.status, fault.retry_after)
        body, status, headers = self._select(data, fault)
        if fault.chunked and status != 416:
            del headers["Content-Length"]
            headers["Transfer-Encoding"] = "chunked"
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or status == 416:
            return
        if fault.corrupt:
            body = memoryview(bytes(body).translate(_INVERT))
        if fault.stall and owner._stopping.wait(fault.stall):  # stopping: give up
            self.close_connection = True
            return
        self._send_body(body, fault, record)

    def _select(self, data: bytes, fault: Fault):
        """Pick the status, byte range and headers the way a static file server would."""
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if fault.gzip:  # a pre-compressed representation: its ranges are of gzip bytes
            data = gzip.compress(data, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        total = len(data)
        etag = self.server.owner._etag(data)
        headers["ETag"] = etag
        match = _RANGE_RE.match(self.headers.get("Range", "") or "")
        if_range = self.headers.get("If-Range")
        stale = if_range is not None and if_range != etag  # RFC 9110: send the whole file
        if match is None or fault.ignore_range or stale:
            headers["Content-Length"] = str(total)
            return memoryview(data), 200, headers
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else total - 1, total - 1)
        if start >= total or start > end:
            headers.update({"Content-Range": f"bytes */{total}", "Content-Length": "0"})
            return memoryview(b""), 416, headers
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        headers["Content-Length"] = str(end - start + 1)
        return memoryview(data)[start : end + 1], 206, headers

    def _send_body(self, body: memoryview, fault: Fault, record: Request) -> None:
        cut = fault.drop_after if fault.hang_after is None else fault.hang_after
        limit = len(body) if cut is None else min(cut, len(body))
        step = len(body) if fault.rate is None else max(1, int(fault.rate / 50))
        if fault.chunked:
            step = min(step, 256 << 10)
        stopping = self.server.owner._stopping
        try:
            while record.sent < limit and not stopping.is_set():
                piece = body[record.sent : min(limit, record.sent + step)]
                self._write(piece, fault.chunked)
                record.sent += len(piece)
                if fault.rate is not None:
                    time.sleep(len(piece) / fault.rate)
            if fault.chunked and record.sent == len(body):
                self.wfile.write(b"0\r\n\r\n")
            if fault.hang_after is not None and record.sent < len(body):
                stopping.wait(30)  # silent but connected: the client's read timeout must fire
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if record.sent < len(body):  # dropped on purpose, or stopping: cut the connection
            self._cut()

    def _write(self, piece: memoryview, chunked: bool) -> None:
        if chunked:
            self.wfile.write(b"%x\r\n" % len(piece))
            self.wfile.write(piece)
            self.wfile.write(b"\r\n")
        else:
            self.wfile.write(piece)

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _empty(self, record: Request, status: int, retry_after: Optional[str] = None) -> None:
        record.status = status
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LoopbackServer:
    """Threaded HTTP server on 127.0.0.1:<free port> serving ``{path: bytes}``."""

    def __init__(self, files: Optional[Dict[str, bytes]] = None) -> None:
        self.files: Dict[str, bytes] = dict(files or {})
        self.faults: Dict[str, List[Fault]] = {}
        self.requests: List[Request] = []
        self._lock = threading.Lock()
        self._etags: Dict[int, tuple] = {}
        self._stopping = threading.Event()
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- content and faults ------------------------------------------------------------
    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` (query string included if given); returns its URL."""
        self.files[path] = bytes(data)
        return self.url(path)

    def fault(self, path: str, **kwargs) -> Fault:
        """Add a fault for ``path``; see :class:`Fault` for the knobs."""
        fault = Fault(**kwargs)
        with self._lock:
            self.faults.setdefault(path, []).append(fault)
        return fault

    def clear_faults(self, path: Optional[str] = None) -> None:
        with self._lock:
            if path is None:
                self.faults.clear()
            else:
                self.faults.pop(path, None)

    def _lookup(self, raw_path: str, record: Request):
        """The bytes for a request path (exact match first, then without the query)."""
        bare = raw_path.split("?", 1)[0]
        key = raw_path if raw_path in self.files else bare
        record.path = key
        with self._lock:
            self.requests.append(record)
            fault = next((f for f in self.faults.get(key, []) if f.take()), _NO_FAULT)
        return self.files.get(key), fault

    def _etag(self, data: bytes) -> str:
        """A strong ETag, so clients can prove with If-Range that a partial is still valid."""
        key = id(data)
        with self._lock:
            cached = self._etags.get(key)
            if cached is None or cached[0] is not data:
                cached = (data, '"' + hashlib.sha1(data).hexdigest()[:16] + '"')
                self._etags[key] = cached
        return cached[1]

    # -- what happened --------------------------------------------------------------------
    def hits(self, path: str, method: str = "GET") -> List[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def count(self, path: str, method: str = "GET") -> int:
        return len(self.hits(path, method))

    def ranges(self, path: str) -> List[Optional[str]]:
        """The Range header of every GET for ``path``, in order (None: no Range)."""
        return [r.range for r in self.hits(path)]

    # -- addresses ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "LoopbackServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; throttled or stalled responses in flight are cut at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
