"""Conversion cost on an L-sized segmentor checkpoint (official layout, ~187 MiB).

Compares, in one invocation, each in a fresh subprocess (so peak RSS is its own):
  naive      torch.load + safetensors.torch.save_file (no renaming, no checks)
  no-verify  segnext_hub.convert(..., verify=False)
  verify     segnext_hub.convert(...)  (two models, two input sizes, exact comparison)
Prints a table: median wall time of the operation (imports excluded), ratio vs naive,
peak RSS (VmHWM), RSS after imports, and the growth during the operation relative to the
file size.

    python benchmarks/bench_convert.py [--repeats 3] [--variant l]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch

def hwm():  # peak RSS of this process; unlike ru_maxrss it does not survive exec from the parent
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

mode, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(int(sys.argv[4]))
if mode == "naive":
    from safetensors.torch import save_file
    base = hwm()
    start = time.perf_counter()
    state = torch.load(src, map_location="cpu")["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, dst)
else:
    from segnext_hub import convert
    import segnext_hub.converter, segnext_hub.verify  # imports are not the conversion's cost
    base = hwm()
    start = time.perf_counter()
    convert(src, dst, verify=(mode == "verify"), force=True)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "peak_rss": hwm(), "base_rss": base}))
"""


def make_checkpoint(path: Path, variant: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers import factory

    factory.write_official(path, factory.mmseg_state(variant, seed=0), md_r=64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default="l")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"segnext_{args.variant}_official.pth"
        make_checkpoint(src, args.variant)
        size = src.stat().st_size
        results: dict[str, list[dict]] = {"naive": [], "no-verify": [], "verify": []}
        for _ in range(args.repeats):  # interleaved, so load drifts hit every method alike
            for mode in results:
                dst = Path(tmp) / f"out-{mode}.safetensors"
                proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst), str(args.threads)],
                                      capture_output=True, text=True, check=True)
                results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        naive = statistics.median(r["seconds"] for r in results["naive"])
        print(f"SegNeXt-{args.variant.upper()} segmentor checkpoint: {size / 2**20:.1f} MiB, "
              f"{args.threads} threads, {os.cpu_count()} CPUs, median of {args.repeats}")
        print("| method | seconds | vs naive | peak RSS (MiB) | RSS after imports (MiB) | growth / file size |")
        print("|---|---|---|---|---|---|")
        for mode, runs in results.items():
            sec = statistics.median(r["seconds"] for r in runs)
            rss = max(r["peak_rss"] for r in runs)
            base = min(r["base_rss"] for r in runs)
            print(f"| {mode} | {sec:.2f} | {sec / naive:.2f}x | {rss / 2**20:.0f} | {base / 2**20:.0f} | "
                  f"{(rss - base) / size:.2f}x |")


if __name__ == "__main__":
    main()
