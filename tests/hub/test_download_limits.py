"""Downloads are bounded whatever the server does (issue 19, finding 6) and a host that
cannot be reached fails at once with the next step (issue 20, point 1).

Evidence: a real HTTP server on 127.0.0.1 (tests/helpers/http_server.py) that sends too
much, compresses, trickles or stalls; real refused connections and real DNS failures
(the ``.invalid`` top-level domain never resolves, RFC 2606); a real full disk (a 1 MiB
tmpfs in a user+mount namespace, where the kernel allows one).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import segnext_hub
from segnext_hub.errors import DownloadError, UnreachableError
from segnext_hub.hub.cache import artifact_dir, checked_root
from segnext_hub.hub.download import download

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "cache"))


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def files_in(folder: Path) -> list[str]:
    """What the download left, lock files aside (they stay by design)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def fetch(url: str, dest: Path, **kwargs):
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("progress", False)
    return download(url, dest, **kwargs)


# -- bytes ----------------------------------------------------------------------------------


def test_endless_body_without_length_stops_at_the_cap(http_server, tmp_path, monkeypatch):
    """No Content-Length (chunked): the documented cap (raised by an environment variable)
    bounds the file; the body is cut there and the partial deleted."""
    monkeypatch.setenv("SEGNEXT_HUB_MAX_DOWNLOAD_MB", "1")
    url = http_server.add("/big.bin", payload(6 * MIB))
    http_server.fault("/big.bin", chunked=True, times=None)
    with pytest.raises(DownloadError, match=r"more than 1048576 bytes.*SEGNEXT_HUB_MAX_DOWNLOAD_MB"):
        fetch(url, tmp_path / "big.bin", retries=0)
    assert files_in(tmp_path) == []

    monkeypatch.setenv("SEGNEXT_HUB_MAX_DOWNLOAD_MB", "8")  # raised: the same file now arrives
    assert fetch(url, tmp_path / "big.bin").size == 6 * MIB


def test_announced_size_over_the_cap_is_refused_before_the_body(http_server, tmp_path):
    """64 MiB announced: far more than loopback socket buffers absorb, so the server can only
    have sent it all if the client read the body (3 MiB fitted in the buffers under load)."""
    url = http_server.add("/big.bin", payload(64 * MIB))
    with pytest.raises(DownloadError, match=r"announces 67108864 bytes, over the 1 MiB cap"):
        fetch(url, tmp_path / "big.bin", max_bytes=MIB)
    assert http_server.hits("/big.bin")[0].sent < 64 * MIB and files_in(tmp_path) == []


def test_registry_size_bounds_the_body(http_server, tmp_path):
    """The registry's size is the strongest bound: another announced size is refused at
    once, and a body without a length that runs past it is cut there."""
    data = payload(2 * MIB)
    url = http_server.add("/a.bin", data)
    with pytest.raises(DownloadError, match=r"announces 2097152 bytes; the registry records 1000000"):
        fetch(url, tmp_path / "a.bin", expected_size=1_000_000)
    http_server.fault("/a.bin", chunked=True)
    with pytest.raises(DownloadError, match=r"more than 1000000 bytes"):
        fetch(url, tmp_path / "a.bin", expected_size=1_000_000, retries=0)
    assert files_in(tmp_path) == []
    assert fetch(url, tmp_path / "a.bin", expected_size=len(data)).path.read_bytes() == data


def test_content_encoding_is_refused_and_identity_asked(http_server, tmp_path):
    """A gzip body could expand without bound (4 MB became 4 GiB): it is refused, not decoded."""
    url = http_server.add("/a.bin", bytes(4 * MIB))  # zeros: compresses ~1000x
    http_server.fault("/a.bin", gzip=True)
    with pytest.raises(DownloadError, match=r"Content-Encoding gzip .*refused"):
        fetch(url, tmp_path / "a.bin")
    assert files_in(tmp_path) == []
    assert http_server.hits("/a.bin")[0].accept_encoding == "identity"


# -- time -----------------------------------------------------------------------------------


def test_trickling_server_counts_as_stalled_and_gives_up(http_server, tmp_path):
    """A server sending a few bytes a second never trips a read timeout; the stall window
    (fewer than 64 KiB in ``timeout`` seconds) does, and the retries run out."""
    url = http_server.add("/slow.bin", payload(MIB))
    http_server.fault("/slow.bin", rate=2000, times=None)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"failed after 1 retries: .*stalled"):
        fetch(url, tmp_path / "slow.bin", timeout=0.4, retries=1)
    assert time.monotonic() - started < 5
    assert http_server.count("/slow.bin") == 2


def test_overall_deadline_ends_a_slow_download_and_keeps_the_partial(http_server, tmp_path, monkeypatch):
    """Fast enough never to stall, too slow to finish: the deadline (environment variable)
    ends it with one line; the partial stays for the next call to resume."""
    monkeypatch.setenv("SEGNEXT_HUB_DOWNLOAD_DEADLINE", "1")
    data = payload(4 * MIB)
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", rate=400_000)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"did not finish within 1 s \(set SEGNEXT_HUB_DOWNLOAD_DEADLINE"):
        fetch(url, tmp_path / "a.bin", timeout=0.5)
    assert time.monotonic() - started < 3
    kept = (tmp_path / "a.bin.partial").read_bytes()
    assert 0 < len(kept) < len(data) and data.startswith(kept)
    monkeypatch.delenv("SEGNEXT_HUB_DOWNLOAD_DEADLINE")
    assert fetch(url, tmp_path / "a.bin").path.read_bytes() == data


@pytest.mark.parametrize("var", ["SEGNEXT_HUB_DOWNLOAD_DEADLINE", "SEGNEXT_HUB_STALL_TIMEOUT",
                                 "SEGNEXT_HUB_MAX_DOWNLOAD_MB"])
def test_bad_limit_variables_are_bad_input(http_server, tmp_path, monkeypatch, var):
    monkeypatch.setenv(var, "-3")
    with pytest.raises(segnext_hub.errors.BadInputError, match=var):
        fetch(http_server.add("/a.bin", b"x"), tmp_path / "a.bin", timeout=None)


# -- disk full ------------------------------------------------------------------------------

DISK_FULL_CHILD = """
import os, sys, types
pkg = types.ModuleType("segnext_hub")
pkg.__path__ = [sys.argv[3]]
sys.modules["segnext_hub"] = pkg
from segnext_hub.hub.download import download
from segnext_hub.errors import DownloadError
folder = sys.argv[2]
try:
    download(sys.argv[1], os.path.join(folder, "model.pth"), progress=False, backoff=0.01, timeout=5)
except DownloadError as err:
    print("ERROR", err)
print("LEFT", sorted(n for n in os.listdir(folder) if not n.endswith(".lock")))
"""


def test_disk_full_names_the_file_and_removes_the_partial(http_server, tmp_path):
    """A real ENOSPC: the download runs in a user+mount namespace on a 1 MiB tmpfs."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    mount = tmp_path / "small"
    mount.mkdir()
    url = http_server.add("/m.pth", payload(3 * MIB))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = f'mount -t tmpfs -o size=1m none "$1" && shift && exec "$@"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(mount), sys.executable, "-c",
                           DISK_FULL_CHILD, url, str(mount), str(REPO / "segnext_hub")],
                          capture_output=True, text=True, timeout=60, env=env)
    if proc.returncode != 0 and "mount" in proc.stderr:
        pytest.skip(f"no tmpfs in a user namespace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    error = next(line for line in proc.stdout.splitlines() if line.startswith("ERROR"))
    assert error == (f"ERROR cannot write {mount}/model.pth: no space left on the device (partial download "
                     "deleted; free space or point SEGNEXT_HUB_CACHE elsewhere)")
    assert "LEFT []" in proc.stdout


def test_write_failure_removes_the_partial_everywhere(http_server, tmp_path, monkeypatch):
    """The same path where namespaces are not allowed: the kernel's ENOSPC from /dev/full."""
    import segnext_hub.hub.partial as partial_module

    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith(".partial") and "b" in mode and ("a" in mode or "w" in mode):
            real_open(path, mode).close()  # the partial exists, as on a real disk
            return real_open("/dev/full", "wb")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(partial_module, "open", full_disk, raising=False)
    url = http_server.add("/m.pth", payload(3 * MIB))
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "m.pth")
    assert str(info.value) == (f"cannot write {tmp_path}/m.pth: no space left on the device (partial download "
                               "deleted; free space or point SEGNEXT_HUB_CACHE elsewhere)")
    assert files_in(tmp_path) == []


# -- unreachable hosts (issue 20) -----------------------------------------------------------


@pytest.fixture
def refused_port():
    """A bound, non-listening loopback port: connecting to it is refused by the kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def assert_fails_fast(url: str, tmp_path: Path, match: str) -> str:
    """Five retries with a 2 s backoff would take > 20 s; an unreachable host takes none."""
    started = time.monotonic()
    with pytest.raises(UnreachableError) as info:
        download(url, tmp_path / "x.pth", retries=5, backoff=2.0, timeout=5.0, progress=False)
    assert time.monotonic() - started < 1.4
    message = f"error: {info.value}"
    assert len(message) < 200 and "\n" not in message, message
    assert match in message, message
    return message


def test_dns_failure_is_not_retried_and_says_what_to_do(tmp_path):
    message = assert_fails_fast("https://no-such-host.invalid/a/b.pth", tmp_path, "no-such-host.invalid")
    assert "DNS lookup failed" in message
    assert "SEGNEXT_HUB_OFFLINE=1" in message and "SEGNEXT_HUB_MIRROR" in message and "segnext-convert" in message


def test_refused_connection_is_not_retried(tmp_path, refused_port):
    message = assert_fails_fast(f"http://127.0.0.1:{refused_port}/b.pth", tmp_path, f"127.0.0.1:{refused_port}")
    assert "connection refused" in message and "SEGNEXT_HUB_OFFLINE=1" in message


def test_unreachable_mirror_names_the_mirror(tmp_path, monkeypatch, refused_port):
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", f"http://127.0.0.1:{refused_port}")
    message = assert_fails_fast("https://download.openmmlab.com/a/b.pth", tmp_path, "mirror 127.0.0.1")
    assert "SEGNEXT_HUB_MIRROR" in message


def test_timeouts_and_5xx_keep_the_retry_policy(http_server, tmp_path):
    url = http_server.add("/a.bin", payload(1000))
    http_server.fault("/a.bin", status=503, times=2)
    http_server.fault("/a.bin", stall=2.0)
    assert fetch(url, tmp_path / "a.bin", timeout=0.3).size == 1000
    assert http_server.count("/a.bin") == 4


def test_failed_first_pull_leaves_nothing_in_the_cache(mirror, monkeypatch, refused_port):
    """No empty raw/ folder, no lock files in the entry: the cache looks as before."""
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", f"http://127.0.0.1:{refused_port}")
    with pytest.raises(UnreachableError):
        segnext_hub.pull("mscan-t", progress=False)
    assert not artifact_dir("mscan-t").exists()
    assert [p.name for p in checked_root().iterdir()] == [".locks"]  # shared lock files live there by design
