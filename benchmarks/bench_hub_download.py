"""Download throughput: segnext_hub.download vs a plain streamed ``requests`` read.

The engine does more than a plain read (SHA-256 while streaming, writing to disk, fsync,
atomic rename, a lock), so this measures what that costs on a link faster than any real
host: a loopback server in another process serving the payload from memory.

    .venv/bin/python benchmarks/bench_hub_download.py            # 200 MiB, median of 3
    .venv/bin/python benchmarks/bench_hub_download.py --size-mib 64 --repeats 5 --rates 0,50

Each rate gets a table: 0 is an unthrottled loopback link (GB/s: measures CPU cost), other
values throttle the server to about that many MB/s, like a fast real host.
Target: segnext_hub.download >= 0.9x the plain read. Unthrottled timings depend on free CPU
cores: the server, the socket reader and the hash/write worker each want one.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segnext_hub.hub.download import CHUNK, download  # noqa: E402
from tests.helpers.http_server import LoopbackServer  # noqa: E402

PATH = "/download.openmmlab.com/mmsegmentation/v0.5/bench.pth"


def _serve(size: int, rate_mbs: float, conn) -> None:
    """Server process: the payload lives here, so the client process measures only itself."""
    with LoopbackServer({PATH: os.urandom(size)}) as server:
        if rate_mbs > 0:
            server.fault(PATH, rate=rate_mbs * 1e6, times=None)
        conn.send(server.url(PATH))
        conn.recv()  # any message: stop


def plain_read(url: str, workdir: Path) -> int:
    """What a user would write by hand: requests streaming, bytes thrown away."""
    total = 0
    with requests.get(url, stream=True, timeout=30) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(CHUNK):
            total += len(chunk)
    return total


def plain_to_file(url: str, workdir: Path) -> int:
    """The same, written to a file (no hash, no fsync): the usual hand-rolled download."""
    dest = workdir / "plain.bin"
    total = 0
    with requests.get(url, stream=True, timeout=30) as resp, open(dest, "wb") as handle:
        resp.raise_for_status()
        for chunk in resp.iter_content(CHUNK):
            handle.write(chunk)
            total += len(chunk)
    dest.unlink()
    return total


def hub_download(url: str, workdir: Path) -> int:
    dest = workdir / "hub.bin"
    result = download(url, dest, progress=False)
    dest.unlink()
    return result.size


METHODS: Dict[str, Callable[[str, Path], int]] = {
    "requests.get(stream=True), discard": plain_read,
    "requests.get(stream=True) -> file": plain_to_file,
    "segnext_hub.download (sha256+file+fsync)": hub_download,
}


def measure(url: str, size: int, repeats: int, workdir: Path) -> Dict[str, List[float]]:
    """MB/s per method; methods interleaved so background load hits them alike."""
    rates: Dict[str, List[float]] = {name: [] for name in METHODS}
    plain_read(url, workdir)  # warm-up: page cache, server ETag, TCP
    for _ in range(repeats):
        for name, method in METHODS.items():
            start = time.perf_counter()
            got = method(url, workdir)
            elapsed = time.perf_counter() - start
            assert got == size, f"{name}: got {got} bytes, expected {size}"
            rates[name].append(size / elapsed / 1e6)
    return rates


def table(rates: Dict[str, List[float]], size: int, repeats: int, rate_mbs: float) -> str:
    base = statistics.median(rates[next(iter(METHODS))])
    link = f"server throttled to ~{rate_mbs:g} MB/s" if rate_mbs > 0 else "unthrottled"
    lines = [
        f"payload {size / 2**20:.0f} MiB over loopback, {link}, median of {repeats}; "
        f"cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}",
        f"| {'method':<42} | {'MB/s':>7} | {'runs (MB/s)':<26} | {'ratio':>5} |",
        f"|{'-' * 44}|{'-' * 9}|{'-' * 28}|{'-' * 7}|",
    ]
    for name, values in rates.items():
        med = statistics.median(values)
        runs = " ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {name:<42} | {med:7.0f} | {runs:<26} | {med / base:5.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rates", default="0,100", help="comma-separated MB/s; 0 = unthrottled")
    args = parser.parse_args()
    for var in ("SEGNEXT_HUB_MIRROR", "SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.pop(var, None)
    size = args.size_mib << 20
    for rate_mbs in (float(r) for r in args.rates.split(",")):
        rates = run_server_and_measure(size, rate_mbs, args.repeats)
        print(table(rates, size, args.repeats, rate_mbs), end="\n\n", flush=True)


def run_server_and_measure(size: int, rate_mbs: float, repeats: int) -> Dict[str, List[float]]:
    parent, child = mp.Pipe()
    server = mp.Process(target=_serve, args=(size, rate_mbs, child), daemon=True)
    server.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory(prefix="segnext-bench-") as tmp:
            return measure(url, size, repeats, Path(tmp))
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
