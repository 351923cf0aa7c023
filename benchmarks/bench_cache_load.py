"""What the cache's safety costs a warm load: ``load("<registry name>")`` (shared lock, manifest
read, size check of every file it reads) vs ``load(<the same cache folder>)`` (no checks),
same weights, same run.

    python benchmarks/bench_cache_load.py [--name mscan-t] [--repeats 15]

The artifact is pulled from a loopback mirror serving a generated checkpoint of the
published layout (tests/helpers/mirror.py), into a temporary cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm: skeleton cache, page cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="mscan-t")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEGNEXT_HUB_CACHE"] = str(Path(tmp) / "cache")
        from tests.helpers.http_server import LoopbackServer
        from tests.helpers.mirror import Mirror

        import segnext_hub

        with LoopbackServer() as server:
            os.environ["SEGNEXT_HUB_MIRROR"] = server.base_url
            Mirror(server).serve(args.name)
            folder = segnext_hub.pull(args.name, progress=False).path
        by_folder = _median_seconds(lambda: segnext_hub.load(folder), args.repeats)
        by_name = _median_seconds(lambda: segnext_hub.load(args.name), args.repeats)
    print(f"Warm load of {args.name}, median of {args.repeats}:\n")
    print("| method | seconds | ratio |\n|---|---|---|")
    print(f"| `load(<cache folder>)` (no checks) | {by_folder:.4f} | 1.00x |")
    print(f"| `load(\"{args.name}\")` (lock + manifest + sizes) | {by_name:.4f} | {by_name / by_folder:.2f}x |")


if __name__ == "__main__":
    main()
