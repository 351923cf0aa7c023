"""CPU training iteration: segnext_hub (model.loss + param_groups + AdamW) vs MMSegmentation 1.2.2.

    python benchmarks/bench_train.py                       # T and S, batch 2 x 3 x 512 x 512, 2 threads
    python benchmarks/bench_train.py --variants t --size 256 --repeats 9

One iteration = loss on the batch (drop path and the NMF's 6 training steps included),
backward, one AdamW step with the configs' parameter groups; MMSeg's is its runner's
(``model.loss``, ``parse_losses``, ``OptimWrapper.update_params``). Both start from the same
random weights and batch, run with the same thread count, and are interleaved iteration by
iteration (rotating which goes first), so drifting load hits both alike. Medians over
--repeats after --warmup iterations; the ratio is ours / MMSeg's from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_model import MMSegTimer, interleaved, keep_heap, parity_python, timed  # noqa: E402
from segnext_hub import create_model  # noqa: E402
from segnext_hub.models.random_init import randomize_  # noqa: E402
from segnext_hub.training import param_groups  # noqa: E402

MD_R = 16  # MMSeg 1.x's configs, every size


def batch(size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 150, (count, size, size), generator=gen)
    labels[:, : size // 8] = 255
    return torch.randn((count, 3, size, size), generator=gen), labels


def our_iteration(variant: str, seed: int, images: torch.Tensor, labels: torch.Tensor):
    model = randomize_(create_model(variant, md_r=MD_R), seed=seed).train()
    optimizer = torch.optim.AdamW(param_groups(model), lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)

    def step() -> None:
        loss = model.loss(images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return model, timed(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="t,s")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    heap = keep_heap()
    python = parity_python()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        mmseg = MMSegTimer(python, workdir, keep_heap=heap) if python else None
        try:
            for variant in args.variants.split(","):
                images, labels = batch(args.size, args.batch)
                model, ours = our_iteration(variant, args.seed, images, labels)
                runners = {"segnext_hub": ours}
                if mmseg is not None:
                    torch.save(model.state_dict(), workdir / "weights.pt")
                    torch.save((images, labels), workdir / "batch.pt")
                    mmseg.load_train(variant, MD_R, workdir / "weights.pt", workdir / "batch.pt", args.threads)
                    runners["MMSeg 1.2.2"] = mmseg.time_train
                times = interleaved(runners, args.warmup, args.repeats)
                rows.append((variant, {name: statistics.median(t) for name, t in times.items()},
                             {name: (min(t), max(t)) for name, t in times.items()}))
        finally:
            if mmseg is not None:
                mmseg.close()
    print(f"\ntraining iteration, CPU, batch {args.batch}x3x{args.size}x{args.size}, {args.threads} threads, "
          f"torch {torch.__version__}, medians of {args.repeats}\n")
    print("| variant | segnext_hub s/iter (min-max) | MMSeg 1.2.2 s/iter (min-max) | ours / MMSeg |")
    print("|---|---|---|---|")
    for variant, med, spread in rows:
        cells = []
        for name in ("segnext_hub", "MMSeg 1.2.2"):
            low, high = spread.get(name, (None, None))
            cells.append(f"{med[name]:.3f} ({low:.3f}-{high:.3f})" if name in med else "n/a")
        ratio = f"{med['segnext_hub'] / med['MMSeg 1.2.2']:.2f}x" if "MMSeg 1.2.2" in med else "n/a"
        print(f"| {variant.upper()} | {cells[0]} | {cells[1]} | {ratio} |")


if __name__ == "__main__":
    main()
