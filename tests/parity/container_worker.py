"""Write a checkpoint with the REAL MMEngine ``Runner.save_checkpoint`` (run in .venv-parity).

A two-iteration training run of a toy model through a real Runner (real MessageHub with
HistoryBuffers, real optimizer wrapper and parameter schedulers, a config whose text holds
a LightHamHead with ``ham_kwargs``, a dataset with ``metainfo``), then
``runner.save_checkpoint``. Usage: python container_worker.py OUT_DIR
"""

from __future__ import annotations

import sys

import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

CLASSES = ("road", "kerb", "grass")
PALETTE = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]


class ToyDataset(Dataset):
    metainfo = dict(classes=CLASSES, palette=PALETTE)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=torch.full((3,), float(index)), labels=torch.tensor(index % 3))


class ToyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.conv_seg = torch.nn.Linear(3, 3)

    def forward(self, inputs, labels=None, mode="tensor"):
        logits = self.conv_seg(inputs)
        if mode == "loss":
            return dict(loss=torch.nn.functional.cross_entropy(logits, labels))
        return logits


def main(out_dir: str) -> None:
    cfg = Config(dict(
        model=dict(type="EncoderDecoder", decode_head=dict(
            type="LightHamHead", num_classes=3, ham_kwargs=dict(MD_S=1, MD_R=16, train_steps=6, eval_steps=7))),
        randomness=dict(seed=1234)))
    runner = Runner(
        model=ToyModel(), work_dir=out_dir, experiment_name="toy_segnext",
        train_dataloader=dict(dataset=ToyDataset(), sampler=dict(type="DefaultSampler", shuffle=False),
                              batch_size=2, collate_fn=dict(type="default_collate")),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=6e-5, weight_decay=0.01)),
        param_scheduler=[dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1),
                         dict(type="PolyLR", power=1.0, begin=1, end=2, eta_min=0.0, by_epoch=False)],
        train_cfg=dict(by_epoch=False, max_iters=2, val_interval=100),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=100)),
        randomness=dict(seed=1234), cfg=cfg)
    runner.train()
    runner.save_checkpoint(out_dir, "real_mmengine.pth")


if __name__ == "__main__":
    main(sys.argv[1])
