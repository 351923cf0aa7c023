"""Batched inference throughput: images per second vs batch size and DataLoader workers.

    python benchmarks/bench_predict.py                   # 16 JPEGs of 512x512, T, CPU
    python benchmarks/bench_predict.py --variant s --images 32 --threads 4

Runs ``segnext_hub.tasks.inference.iter_predictions`` (the path of ``segnext-hub predict``
without writing PNGs): files are decoded and test-resized in a DataLoader with W workers
and forwarded B at a time (whole mode; all images share one size, so every batch is
full), for the exact and the fused model, on the same random weights. Ratios are
against batch 1 / workers 0 of the same model in the same run. Each setting runs
--repeats times (after one warm-up pass); the median is reported. It also checks that
every setting's masks equal batch 1's.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segnext_hub import create_model  # noqa: E402
from segnext_hub.models.random_init import randomize_  # noqa: E402
from segnext_hub.tasks.inference import iter_predictions  # noqa: E402


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random JPEGs (upsampled noise: realistic for the decoder, not pure noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = torch.from_numpy(rng.integers(0, 256, (1, 3, size // 16, size // 16)).astype(np.float32))
        big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
        pixels = big[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        paths.append(folder / f"img{i:03d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def run_once(model, paths, batch: int, workers: int) -> tuple[float, list[torch.Tensor]]:
    start = time.perf_counter()
    masks = [pred.mask for _, _, pred in iter_predictions(model, paths, {"mode": "whole"}, seed=0,
                                                           batch_size=batch, workers=workers)]
    return time.perf_counter() - start, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="t")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    exact = randomize_(create_model(args.variant), seed=0).eval()
    models = {"exact": exact, "fused": exact.fuse()}
    print(f"# {args.images} images of {args.size}x{args.size}, MSCAN-{args.variant.upper()}, CPU, "
          f"{args.threads} torch threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| model | batch | workers | img/s | vs batch 1, workers 0 | masks = batch 1 |")
    print("|---|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.size)
        for name, model in models.items():
            run_once(model, paths[:2], 1, 0)  # warm-up (allocator, oneDNN primitives)
            base_rate, base_masks = None, None
            for b in batches:
                for w in workers:
                    times, masks = [], None
                    for _ in range(args.repeats):
                        seconds, masks = run_once(model, paths, b, w)
                        times.append(seconds)
                    rate = args.images / statistics.median(times)
                    if base_rate is None:
                        base_rate, base_masks = rate, masks
                    same = all(torch.equal(a, m) for a, m in zip(base_masks, masks))
                    print(f"| {name} | {b} | {w} | {rate:.2f} | {rate / base_rate:.2f}x | {'yes' if same else 'NO'} |",
                          flush=True)
    print("# GPU: not measured by this run (no CUDA device in this session).")


if __name__ == "__main__":
    main()
