"""DDP training steps on synthetic samples keyed by their draw number; run under torchrun or alone.

    python -m torch.distributed.run --nproc_per_node=2 tests/training/ddp_worker.py OUT TOTAL ACCUM STEPS

Each sample (image, label and the NMF's initial bases) is generated from its draw number, and
the backbone is frozen (``freeze_stages(model, 4)``, as ``--freeze-backbone``) and the model in
eval mode, so nothing but the split of the batch over processes and micro-batches could
change the result: BatchNorm uses its running statistics (not the micro-batch's), dropout
and drop path are off. Why frozen and not only eval-mode BatchNorm: torch 2.13.0 and 2.14.1
on the CPU give wrong input gradients through an eval-mode ``BatchNorm2d`` when the batch is 1
and the incoming gradient has a channels-last stride, which MSCAN's stage LayerNorm produces
(a micro-batch of 1 then gets wrong backbone gradients; a batch of 2 does not; see
docs/finetune.md). Training-mode BatchNorm is another kernel. The optimiser is plain SGD, so a wrongly
scaled gradient shows in the weights (AdamW's first step would hide a scale factor). Writes
OUT/rank{r}_step{s}.pt: every parameter after each step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import segnext_hub  # noqa: E402
from segnext_hub.models.loss import decode_loss  # noqa: E402
from segnext_hub.tasks.distributed import current_world, finish, init_from_env, launched_by_torchrun  # noqa: E402
from segnext_hub.training.data import InfiniteSampler  # noqa: E402
from segnext_hub.training.distributed import freeze_stages, train_step  # noqa: E402

SIZE, CLASSES, HAM, RANK = 32, 3, 256, 16


def sample(draw: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + draw)
    image = torch.randn(3, SIZE, SIZE, generator=g)
    label = torch.randint(0, CLASSES, (SIZE, SIZE), generator=g)
    bases = F.normalize(torch.rand((HAM, RANK), generator=g), dim=0)
    return image, label, bases


def run(out: Path, total: int, accum: int, steps: int) -> None:
    torch.set_num_threads(1)
    world = current_world()
    micro = total // (world.size * accum)
    torch.manual_seed(0)
    model = segnext_hub.create_model("t", num_classes=CLASSES, md_r=RANK).eval()
    freeze_stages(model, 4)
    net = torch.nn.parallel.DistributedDataParallel(model) if world.distributed else model
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    draws = (draw for _, draw in InfiniteSampler(10 ** 6, rank=world.rank, world_size=world.size, chunk=micro))

    def loss_fn(net, batch):
        images, labels, bases = batch
        return decode_loss(net(images, bases=bases), labels)

    out.mkdir(parents=True, exist_ok=True)
    for step in range(1, steps + 1):
        batches = []
        for _ in range(accum):
            parts = [sample(next(draws)) for _ in range(micro)]
            batches.append(tuple(torch.stack([p[i] for p in parts]) for i in range(3)))
        train_step(net, batches, optimizer, loss_fn)
        torch.save({k: v.detach().clone() for k, v in model.named_parameters()},
                   out / f"rank{world.rank}_step{step}.pt")


if __name__ == "__main__":
    if launched_by_torchrun():
        init_from_env("cpu", 120)
    try:
        run(Path(sys.argv[1]), *map(int, sys.argv[2:5]))
    finally:
        finish()
