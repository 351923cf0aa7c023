"""The download engine against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

What a user would notice: the right bytes end up at ``dest`` or nothing does; interrupted
downloads continue where they stopped; flaky servers are retried, dead links are not;
offline mode never touches the network; parallel pulls download once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segnext_hub.errors import BadInputError, DownloadError, OfflineError
from segnext_hub.hub.download import CHUNK, DownloadResult, download, mirror_url

REPO = Path(__file__).resolve().parents[2]
MMSEG_PATH = (
    "/download.openmmlab.com/mmsegmentation/v0.5/segnext/"
    "segnext_mscan-t_1x16_512x512_adamw_160k_ade20k/"
    "segnext_mscan-t_1x16_512x512_adamw_160k_ade20k_20230210_140244-05bd8466.pth"
)
MIB = 1 << 20


def payload(size: int = 3 * MIB + 12345, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes; not a multiple of the chunk size."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def own_cache(monkeypatch, tmp_path):
    """Locks and partial files of each test in a cache of its own (tests/conftest.py already
    removed proxies, which would swallow 127.0.0.1, the mirror and the offline switches)."""
    monkeypatch.setenv("SEGNEXT_HUB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data() -> bytes:
    return payload()


def leftovers(folder: Path) -> list[str]:
    """Files other than lock files (which may stay by design)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def fetch(url: str, dest: Path, **kwargs) -> DownloadResult:
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 5.0)
    return download(url, dest, **kwargs)


# -- mirror ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://download.openmmlab.com/mmsegmentation/v0.5/a/b.pth",
         "http://127.0.0.1:8000/download.openmmlab.com/mmsegmentation/v0.5/a/b.pth"),
        ("https://cloud.tsinghua.edu.cn/f/5da98841b8384ba0988a/?dl=1",
         "http://127.0.0.1:8000/cloud.tsinghua.edu.cn/f/5da98841b8384ba0988a/?dl=1"),
        ("https://cloud.tsinghua.edu.cn/d/c15b/files/?p=%2Fmscan_t.pth&dl=1",
         "http://127.0.0.1:8000/cloud.tsinghua.edu.cn/d/c15b/files/?p=%2Fmscan_t.pth&dl=1"),
        ("http://user:pw@example.org:8080/x.pkl#frag",
         "http://127.0.0.1:8000/example.org:8080/x.pkl"),
        ("https://example.org", "http://127.0.0.1:8000/example.org/"),
    ],
)
@pytest.mark.parametrize("mirror", ["http://127.0.0.1:8000", "http://127.0.0.1:8000/"])
def test_mirror_rewrites_host_path_and_query(monkeypatch, url, expected, mirror):
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", mirror)
    assert mirror_url(url) == expected


def test_mirror_unset_or_empty_leaves_url_alone(monkeypatch):
    url = "https://cloud.tsinghua.edu.cn/f/5da98841b8384ba0988a/?dl=1"
    assert mirror_url(url) == url
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", "  ")
    assert mirror_url(url) == url


def test_bad_mirror_is_bad_input(monkeypatch):
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", "127.0.0.1:8000")
    with pytest.raises(BadInputError, match="SEGNEXT_HUB_MIRROR"):
        mirror_url("https://example.org/x")


def test_download_through_mirror_fetches_published_paths(http_server, monkeypatch, tmp_path, data):
    tsinghua = "/cloud.tsinghua.edu.cn/f/5da98841b8384ba0988a/?dl=1"
    http_server.add(MMSEG_PATH, data)
    http_server.add(tsinghua, data[::-1])
    monkeypatch.setenv("SEGNEXT_HUB_MIRROR", http_server.base_url)

    a = fetch("https://" + MMSEG_PATH.lstrip("/"), tmp_path / "a.pth", expected_sha256=sha(data))
    b = fetch("https://" + tsinghua.lstrip("/"), tmp_path / "b.pth")

    assert a.path.read_bytes() == data and b.path.read_bytes() == data[::-1]
    assert http_server.count(MMSEG_PATH) == 1 and http_server.count(tsinghua) == 1


# -- offline --------------------------------------------------------------------------------


@pytest.mark.parametrize("var", ["SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_raises_without_touching_the_server(http_server, monkeypatch, tmp_path, data, var):
    url = http_server.add("/a.bin", data)
    monkeypatch.setenv(var, "1")
    with pytest.raises(OfflineError, match=var):
        fetch(url, tmp_path / "a.bin")
    assert http_server.requests == []
    assert leftovers(tmp_path) == []


def test_offline_still_returns_a_finished_file(http_server, monkeypatch, tmp_path, data):
    url = http_server.add("/a.bin", data)
    fetch(url, tmp_path / "a.bin")
    monkeypatch.setenv("SEGNEXT_HUB_OFFLINE", "yes")
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert result.downloaded is False and result.sha256 == sha(data)
    assert http_server.count("/a.bin") == 1


# -- the happy path ---------------------------------------------------------------------------


def test_plain_download_hashes_while_streaming(http_server, tmp_path, data, capsys):
    url = http_server.add("/a.bin", data)
    dest = tmp_path / "sub" / "a.bin"
    result = fetch(url, dest, expected_sha256=sha(data).upper())

    assert result == DownloadResult(dest, sha(data), len(data), resumed=False, downloaded=True)
    assert dest.read_bytes() == data
    assert leftovers(dest.parent) == ["a.bin"]
    assert http_server.ranges("/a.bin") == [None]
    assert capsys.readouterr().err == ""  # not a terminal: no progress bar


def test_second_call_returns_the_file_without_network(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    fetch(url, tmp_path / "a.bin")
    again = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert again.downloaded is False and again.sha256 == sha(data) and again.size == len(data)
    assert http_server.count("/a.bin") == 1


def test_existing_file_with_the_wrong_hash_is_replaced(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    (tmp_path / "a.bin").write_bytes(b"stale")
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert result.downloaded is True and (tmp_path / "a.bin").read_bytes() == data


def test_progress_bar_on_request(http_server, tmp_path, data, capsys):
    url = http_server.add("/a.bin", data)
    fetch(url, tmp_path / "a.bin", progress=True, desc="mscan-t")
    err = capsys.readouterr().err
    assert "mscan-t" in err and "100%" in err


def test_progress_bar_of_a_resumed_download_starts_at_the_partial(http_server, tmp_path, data, capsys):
    """tqdm(initial=...): the bar's first frame already counts the bytes kept from the run
    that failed (loopback server: a drop, then 500s until the retries run out)."""
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=len(data) // 2)
    http_server.fault("/a.bin", status=500, times=None)
    with pytest.raises(DownloadError):
        fetch(url, tmp_path / "a.bin", retries=0)
    http_server.clear_faults("/a.bin")
    capsys.readouterr()
    fetch(url, tmp_path / "a.bin", progress=True, desc="resumed")
    frames = [f for f in capsys.readouterr().err.replace("\r", "\n").splitlines() if "resumed" in f]
    assert frames[0].split("%")[0].split()[-1] == "50" and "100%" in frames[-1]


def test_malformed_expected_hash_is_rejected_before_network(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    with pytest.raises(BadInputError, match="64 hex"):
        fetch(url, tmp_path / "a.bin", expected_sha256="05bd8466")
    assert http_server.requests == []


# -- faults -----------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_with_range(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=2 * MIB + 5000)
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))

    assert result.resumed is True and (tmp_path / "a.bin").read_bytes() == data
    # every byte that arrived before the drop is kept
    assert http_server.ranges("/a.bin") == [None, f"bytes={2 * MIB + 5000}-"]
    assert [r.status for r in http_server.hits("/a.bin")] == [200, 206]
    assert leftovers(tmp_path) == ["a.bin"]


def test_repeated_drops_keep_making_progress(http_server, tmp_path, data):
    """More drops than ``retries``, but each one moved forward: it still finishes."""
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=MIB + 10, times=3)
    result = fetch(url, tmp_path / "a.bin", retries=1)
    assert result.path.read_bytes() == data
    assert http_server.ranges("/a.bin") == [None] + [f"bytes={n * (MIB + 10)}-" for n in (1, 2, 3)]


def test_failure_leaves_only_a_correct_prefix_and_never_dest(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=2 * MIB + 1)
    http_server.fault("/a.bin", status=500, times=None)
    with pytest.raises(DownloadError, match="failed after 2 retries"):
        fetch(url, tmp_path / "a.bin", retries=2)
    assert not (tmp_path / "a.bin").exists()
    assert (tmp_path / "a.bin.partial").read_bytes() == data[: 2 * MIB + 1]


def test_503_then_success(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", status=503, times=2)
    result = fetch(url, tmp_path / "a.bin")
    assert result.path.read_bytes() == data
    assert [r.status for r in http_server.hits("/a.bin")] == [503, 503, 200]


def test_429_waits_for_retry_after(http_server, tmp_path, data):
    """Loopback server answers 429 with Retry-After: 1; the retry comes only after that second
    (backoff alone would retry after 0 s), from urllib3's Retry mounted on the session."""
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", status=429, retry_after="1")
    start = time.monotonic()
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert time.monotonic() - start >= 0.95
    assert result.path.read_bytes() == data
    assert [r.status for r in http_server.hits("/a.bin")] == [429, 200]


def test_retry_after_is_capped(http_server, tmp_path, data, monkeypatch):
    """A server asking for an hour is waited for at most MAX_RETRY_AFTER (lowered here)."""
    import segnext_hub.hub.download as download_module

    monkeypatch.setattr(download_module, "MAX_RETRY_AFTER", 0.2)
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", status=503, retry_after="3600")
    start = time.monotonic()
    assert fetch(url, tmp_path / "a.bin").path.read_bytes() == data
    assert 0.15 <= time.monotonic() - start < 30
    assert [r.status for r in http_server.hits("/a.bin")] == [503, 200]


def test_resumed_download_retries_a_status_with_its_range(http_server, tmp_path, data):
    """A 503 in the middle of a resume is retried with the same Range, not from zero."""
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=MIB + 3)
    http_server.fault("/a.bin", status=503)
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert result.resumed is True and result.path.read_bytes() == data
    assert http_server.ranges("/a.bin") == [None, f"bytes={MIB + 3}-", f"bytes={MIB + 3}-"]


def test_persistent_5xx_gives_up_after_retries_with_backoff(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", status=502, times=None)
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "a.bin", retries=3, backoff=0.05)
    elapsed = time.monotonic() - start
    assert http_server.count("/a.bin") == 4
    assert "502" in str(info.value) and url in str(info.value) and "\n" not in str(info.value)
    assert elapsed >= 0.75 * (0.05 + 0.1 + 0.2)  # exponential, with at most 25% jitter
    assert not (tmp_path / "a.bin").exists()


def test_404_fails_at_once_with_url_and_status(http_server, tmp_path):
    url = http_server.url("/missing.pth")
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "m.pth", retries=5, backoff=1.0)
    message = str(info.value)
    assert url in message and "404" in message and "\n" not in message
    assert http_server.count("/missing.pth") == 1
    assert leftovers(tmp_path) == []


def test_403_is_not_retried_either(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", status=403)
    with pytest.raises(DownloadError, match="403"):
        fetch(url, tmp_path / "a.bin")
    assert http_server.count("/a.bin") == 1


def test_wrong_bytes_with_expected_hash_leave_nothing_behind(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    # corrupt bytes, cut mid-file, then resumed: a resume must not make them look good
    http_server.fault("/a.bin", corrupt=True, drop_after=2 * MIB + 7)
    http_server.fault("/a.bin", corrupt=True)
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    message = str(info.value)
    assert f"expected {sha(data)[:12]}" in message and "got " in message and url in message
    assert leftovers(tmp_path) == [], "no dest, no partial, no meta"

    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))  # server fixed
    assert result.path.read_bytes() == data and result.resumed is False
    assert http_server.ranges("/a.bin")[-1] is None  # started from zero


def test_server_ignoring_range_restarts_cleanly(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=2 * MIB + 99)
    http_server.fault("/a.bin", ignore_range=True, times=None)
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert result.path.read_bytes() == data and result.resumed is False
    assert http_server.ranges("/a.bin") == [None, f"bytes={2 * MIB + 99}-"]
    assert [r.status for r in http_server.hits("/a.bin")] == [200, 200]


def test_changed_file_on_server_is_not_spliced(http_server, tmp_path, data):
    """If-Range carries the ETag: a partial of the old file is thrown away, not continued."""
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", drop_after=2 * MIB + 1)
    http_server.fault("/a.bin", status=500, times=None)
    with pytest.raises(DownloadError):
        fetch(url, tmp_path / "a.bin", retries=0)
    assert (tmp_path / "a.bin.partial").stat().st_size == 2 * MIB + 1
    new = payload(len(data), seed=1)
    http_server.add("/a.bin", new)
    http_server.clear_faults()
    result = fetch(url, tmp_path / "a.bin")
    assert result.path.read_bytes() == new and result.sha256 == sha(new)
    last = http_server.hits("/a.bin")[-1]
    assert last.range == f"bytes={2 * MIB + 1}-" and last.status == 200


def test_partial_of_another_url_is_not_continued(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    (tmp_path / "a.bin.partial").write_bytes(b"x" * (2 * MIB))
    (tmp_path / "a.bin.partial.meta").write_text(json.dumps({"url": "http://elsewhere/a.bin"}))
    result = fetch(url, tmp_path / "a.bin")
    assert result.path.read_bytes() == data
    assert http_server.ranges("/a.bin") == [None]


def test_complete_partial_is_finished_after_416(http_server, tmp_path, data):
    """A run killed between the last byte and the rename: nothing left to fetch."""
    url = http_server.add("/a.bin", data)
    (tmp_path / "a.bin.partial").write_bytes(data)
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert result.path.read_bytes() == data and result.resumed is True
    assert [r.status for r in http_server.hits("/a.bin")] == [416]


def test_oversized_partial_restarts_after_416(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    (tmp_path / "a.bin.partial").write_bytes(data + b"garbage")
    result = fetch(url, tmp_path / "a.bin")
    assert result.path.read_bytes() == data
    assert [r.status for r in http_server.hits("/a.bin")] == [416, 200]


def test_slow_server_within_timeout_works(http_server, tmp_path):
    small = payload(MIB // 2)
    url = http_server.add("/slow.bin", small)
    http_server.fault("/slow.bin", rate=1.5 * MIB, times=None)  # ~0.35 s, reads every 20 ms
    result = fetch(url, tmp_path / "slow.bin", timeout=1.0, retries=0)
    assert result.path.read_bytes() == small


@pytest.mark.parametrize("chunked", [False, True])
def test_server_hanging_mid_body_times_out_and_resumes(http_server, tmp_path, data, chunked):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", hang_after=MIB + 100, chunked=chunked)
    result = fetch(url, tmp_path / "a.bin", timeout=0.3, expected_sha256=sha(data))
    assert result.path.read_bytes() == data
    first, second = http_server.ranges("/a.bin")
    start = int(second.split("=")[1].rstrip("-"))
    assert first is None
    assert MIB + 100 - CHUNK <= start <= MIB + 100  # a read cut by a timeout loses <= 1 buffer


def test_stalled_server_times_out_and_is_retried(http_server, tmp_path):
    small = payload(MIB // 2)
    url = http_server.add("/stall.bin", small)
    http_server.fault("/stall.bin", stall=2.0)  # headers sent, then silence
    start = time.monotonic()
    result = fetch(url, tmp_path / "stall.bin", timeout=0.3)
    assert result.path.read_bytes() == small
    assert http_server.count("/stall.bin") == 2
    assert time.monotonic() - start < 1.8  # gave up on the stall instead of waiting it out


# -- other processes ------------------------------------------------------------------------

# The package __init__ imports torch, seconds per process on a small shared box; these
# children exercise download.py only, so they load the package without running __init__.
CHILD = """
import json, sys, types
pkg = types.ModuleType("segnext_hub")
pkg.__path__, pkg.__version__ = [sys.argv[3]], "test"
sys.modules["segnext_hub"] = pkg
from segnext_hub.hub.download import download
url, dest = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
r = download(url, dest, progress=False, backoff=0.01, timeout=10)
print(json.dumps({"sha": r.sha256, "downloaded": r.downloaded, "size": r.size}), flush=True)
"""


def child_env() -> dict:
    env = dict(os.environ)  # already isolated by tests/conftest.py
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_child(url: str, dest: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(dest), str(REPO / "segnext_hub")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(),
    )


def wait_ready(procs: list[subprocess.Popen], deadline: float) -> None:
    """Wait (bounded) until every child has imported everything and waits for "go"."""
    for proc in procs:
        readable, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert readable, "child did not start in time"
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()


def go(procs: list[subprocess.Popen]) -> None:
    for proc in procs:  # released together
        proc.stdin.write("go\n")
        proc.stdin.flush()


def reap(procs: list[subprocess.Popen]) -> None:
    """Whatever happened in the test, no child outlives it."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_download_killed_with_sigkill_is_resumed(http_server, tmp_path):
    data = payload(4 * MIB + 777, seed=3)
    url = http_server.add("/k.bin", data)
    http_server.fault("/k.bin", rate=2 * MIB)  # ~2 s for the whole file: time to kill it
    dest = tmp_path / "k.bin"
    partial = tmp_path / "k.bin.partial"
    proc = start_child(url, dest)
    try:
        wait_ready([proc], time.monotonic() + 30)
        go([proc])
        deadline = time.monotonic() + 20
        while not (partial.exists() and partial.stat().st_size >= CHUNK):
            assert time.monotonic() < deadline and proc.poll() is None, "no partial appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        reap([proc])
    assert proc.returncode == -signal.SIGKILL
    assert not dest.exists()
    kept = partial.stat().st_size
    assert 0 < kept < len(data) and partial.read_bytes() == data[:kept]

    result = fetch(url, dest, expected_sha256=sha(data))  # the lock died with the child
    assert result.resumed is True and dest.read_bytes() == data
    assert http_server.ranges("/k.bin") == [None, f"bytes={kept}-"]


def test_four_processes_download_once(http_server, tmp_path):
    data = payload(2 * MIB + 3, seed=4)
    url = http_server.add("/c.bin", data)
    http_server.fault("/c.bin", rate=4 * MIB)  # ~0.5 s: the others must wait on the lock
    dest = tmp_path / "c.bin"
    procs = [start_child(url, dest) for _ in range(4)]
    try:
        wait_ready(procs, time.monotonic() + 60)
        go(procs)
        outputs = [proc.communicate(timeout=30) for proc in procs]
    finally:
        reap(procs)
    results = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["sha"] == sha(data) and r["size"] == len(data) for r in results)
    assert sorted(r["downloaded"] for r in results) == [False, False, False, True]
    assert http_server.count("/c.bin") == 1 and http_server.ranges("/c.bin") == [None]
    assert dest.read_bytes() == data and leftovers(tmp_path) == ["c.bin"]


# -- less common responses ------------------------------------------------------------------


def test_chunked_body_dropped_and_resumed(http_server, tmp_path, data):
    url = http_server.add("/a.bin", data)
    http_server.fault("/a.bin", chunked=True, drop_after=MIB + 3)
    http_server.fault("/a.bin", chunked=True)
    result = fetch(url, tmp_path / "a.bin", expected_sha256=sha(data))
    assert result.path.read_bytes() == data and result.resumed is True
    assert http_server.ranges("/a.bin") == [None, f"bytes={MIB + 3}-"]
