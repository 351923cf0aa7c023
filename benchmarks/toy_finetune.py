"""A generated segmentation dataset and a short fine-tune, for measuring int8 agreement.

Random weights give near-tied logits, so any perturbation flips the argmax and agreement
figures measured on them say nothing. This module makes a model that predicts with
confidence, through the project's own training path (``SegmentationFolder``,
``TrainTransform``, ``param_groups``, ``poly_schedule``, ``model.loss``: what
``examples/finetune.py`` runs), on images it draws itself: textured backgrounds with
discs, boxes and stripes of class-specific colours (noisy, so colour alone is not a
lookup table). bench_engines.py and the OpenVINO tests use it.

    python benchmarks/toy_finetune.py OUT_DIR --iters 200     # writes OUT_DIR/data, OUT_DIR/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from segnext_hub import create_model  # noqa: E402
from segnext_hub.training import (  # noqa: E402
    InfiniteSampler, SegmentationFolder, TrainTransform, param_groups, poly_schedule, save_checkpoint,
)

CLASSES = ("background", "disc", "box", "stripe")
# Mean RGB per class; each object's colour is jittered around it.
COLOURS = {1: (200, 60, 50), 2: (60, 170, 70), 3: (50, 80, 200)}


def draw_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 image and its (H, W) uint8 label."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.integers(90, 170, size=3)
    image = base + rng.normal(0, 18, size=(size, size, 3))  # textured grey-ish background
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, 4))
        cy, cx = rng.integers(0, size, size=2)
        extent = rng.integers(size // 10, size // 4)
        if cls == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < extent ** 2
        elif cls == 2:
            mask = (abs(yy - cy) < extent) & (abs(xx - cx) < extent * rng.uniform(0.5, 1.5))
        else:
            mask = (abs(yy - cy) < extent * 2) & (((xx + yy) // max(extent // 3, 2)) % 2 == 0) & (abs(xx - cx) < extent)
        colour = np.array(COLOURS[cls]) + rng.normal(0, 20, size=3)
        image[mask] = colour + rng.normal(0, 12, size=(int(mask.sum()), 3))
        label[mask] = cls
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_dataset(root: Path, count: int, size: int = 128, seed: int = 0) -> Path:
    """``root/images/*.png`` + ``root/labels/*.png`` + ``root/classes.txt``; returns ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, label = draw_sample(rng, size)
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(label).save(root / "labels" / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def finetune(data: Path, *, variant: str = "t", iters: int = 200, batch_size: int = 4, crop: int = 128,
             lr: float = 6e-4, seed: int = 0, out: Optional[Path] = None) -> torch.nn.Module:
    """Train a new model from random weights on ``data`` with the project's recipe; eval mode.

    The recipe is MMSeg's (AdamW, head lr x10, warm-up + poly), with a learning rate ten
    times the fine-tuning default because nothing here is pretrained.
    """
    torch.manual_seed(seed)
    dataset = SegmentationFolder(data, data / "classes.txt", seed=seed,
                                 transform=TrainTransform(crop_size=crop, scale=(crop * 2, crop), ratio_range=(0.75, 1.5)))
    model = create_model(variant, num_classes=dataset.num_classes, md_r=16).train()
    optimizer = torch.optim.AdamW(param_groups(model, lr=lr, weight_decay=0.01), lr=lr, weight_decay=0.01)
    scheduler = poly_schedule(optimizer, total_iters=iters, warmup_iters=min(iters // 10, 50) if iters >= 20 else 0)
    loader = DataLoader(dataset, batch_size=batch_size, drop_last=True,
                        sampler=InfiniteSampler(len(dataset), seed=seed))
    for _, (images, labels) in zip(range(iters), loader):
        loss = model.loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    if out is not None:
        save_checkpoint(out, model, classes=dataset.classes)
    return model


def pixel_accuracy(model: torch.nn.Module, data: Path, indices: range, size: int = 128) -> float:
    """Share of pixels whose predicted class is the label (a sanity figure for the fine-tune)."""
    right = total = 0
    for i in indices:
        image = np.array(Image.open(data / "images" / f"{i:04d}.png").convert("RGB"))
        label = np.array(Image.open(data / "labels" / f"{i:04d}.png"))
        (pred,) = model.predict(image, scale=None, generator=torch.Generator().manual_seed(i))
        right += int((pred.mask.numpy() == label).sum())
        total += label.size
    return right / total


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = make_dataset(args.out / "data", args.images)
    model = finetune(data, iters=args.iters, out=args.out / "model.safetensors")
    print(f"pixel accuracy on the last 8 images: {pixel_accuracy(model, data, range(args.images - 8, args.images)):.3f}")


if __name__ == "__main__":
    main()
