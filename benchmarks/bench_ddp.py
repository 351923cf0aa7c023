"""Fine-tuning iteration time under torchrun: N processes (gloo, CPU) vs 1, same total batch.

    python benchmarks/bench_ddp.py                     # SegNeXt-T, total batch 4, 128x128 crops, 1 and 2 ranks
    python benchmarks/bench_ddp.py --crop 256 --batch 8 --ranks 1 2

Runs ``examples/finetune.py`` under ``torchrun --standalone`` on a generated dataset twice per
rank count, with --iters SHORT and LONG, and reports (time(LONG) - time(SHORT)) / (LONG - SHORT):
the steady-state time of one iteration (data, forward, backward, all-reduce, AdamW), with
start-up (interpreters, imports, rendezvous, model build) cancelled out. Every process gets
one intra-op thread (OMP_NUM_THREADS=1), so N ranks use N cores. The ratio is N ranks / 1
rank from the same invocation. On a 2-core machine shared with other work, 2 ranks
compete with everything else for the same two cores: this is no speed test of DDP, only a
check of what the overhead looks like here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_data(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = np.kron(rng.integers(0, 3, (size // 16, size // 16)), np.ones((16, 16), np.int64)).astype(np.uint8)
        image = np.clip(np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])[label]
                        + rng.integers(-20, 21, label.shape + (3,)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(label).save(root / "labels" / f"{i}.png")
    (root / "classes.txt").write_text("a\nb\nc\n")
    return root


def run(data: Path, out: Path, ranks: int, iters: int, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           str(ROOT / "examples" / "finetune.py"), str(data), "--model", "t", "--backbone", "none",
           "--classes", str(data / "classes.txt"), "--iters", str(iters), "--batch-size", str(args.batch),
           "--crop-size", str(args.crop), "--out", str(out), "--workers", "0", "--device", "cpu",
           "--save-every", str(10 ** 6), "--warmup", "0"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=4, help="total batch per iteration")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--short", type=int, default=2)
    p.add_argument("--long", type=int, default=12)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "data", 8, args.crop + 32)
        per_iter = {}
        for ranks in args.ranks:
            short = run(data, Path(tmp) / f"s{ranks}", ranks, args.short, args)
            long = run(data, Path(tmp) / f"l{ranks}", ranks, args.long, args)
            per_iter[ranks] = (long - short) / (args.long - args.short)
    base = per_iter[args.ranks[0]]
    print(f"SegNeXt-T fine-tuning, total batch {args.batch}, {args.crop}x{args.crop} crops, CPU (gloo), "
          f"1 thread per process, {os.cpu_count()} cores")
    print("| processes | per-process batch | s / iteration | vs 1 process |")
    print("|---|---|---|---|")
    for ranks, seconds in per_iter.items():
        print(f"| {ranks} | {args.batch // ranks} | {seconds:.3f} | {seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
