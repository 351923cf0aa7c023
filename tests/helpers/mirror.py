"""Serve generated checkpoints at the registry's URLs on a loopback mirror (the ``mirror``
fixture in tests/conftest.py wires one through the environment)."""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import torch

from segnext_hub.hub.registry import Artifact, get_artifact
from tests.helpers import factory
from tests.helpers.http_server import LoopbackServer


def mirror_path(url: str) -> str:
    parts = urlsplit(url)
    return f"/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


REGISTRY = "registry"  # the config text records what the registry says


def checkpoint_bytes(art: Artifact, seed: int = 0, *, md_r: Any = REGISTRY, train_seed: int = 1234,
                     classes: Optional[Sequence[str]] = None,
                     palette: Optional[Sequence[Sequence[int]]] = None) -> bytes:
    """A file in the artifact's published layout, with random weights of its size, in the
    container its runner writes (MMEngine for MMSeg 1.x, mmcv 1.x for the official repo).
    ``md_r``: what the config text records (None: no ham_kwargs, the official B/L case);
    ``train_seed``: the run's seed in meta."""
    backbone = art.kind == "backbone"
    state = factory.mmseg_state(art.variant, seed=seed, num_classes=art.num_classes or 150,
                                md_r=art.md_r, backbone_only=backbone)
    if art.layout == "jittor":
        return factory.jittor_bytes(factory.to_jittor(state))
    if backbone:
        official = factory.to_official(state)
        official["head.weight"] = torch.zeros(1000, official["norm4.weight"].shape[0])
        official["head.bias"] = torch.zeros(1000)
        return factory.to_bytes({"state_dict": official} if art.layout == "official" else
                                {"meta": {}, "state_dict": factory.with_metadata(state)})
    record = dict(variant=art.variant, md_r=art.md_r if md_r == REGISTRY else md_r, seed=train_seed,
                  classes=classes, palette=palette, num_classes=art.num_classes)
    if art.layout == "official":
        return factory.to_bytes(factory.mmcv_checkpoint(factory.to_official(state), **record))
    return factory.to_bytes(factory.mmengine_checkpoint(state, **record))


def training_log(*, seed: int = 1234, md_r: Optional[int] = 16) -> bytes:
    """An mmcv ``.log.json``: the header record (env_info, seed, config text), then train/val."""
    config = factory.config_text("t", md_r=md_r, seed=seed)
    lines: list[dict] = [{"env_info": "sys.platform: linux\nMMCV: 1.5.0", "seed": seed, "config": config,
                          "mmseg_version": "0.24.1+", "exp_name": "segnext.py"}]
    for it in range(50, 201, 50):
        lines.append({"mode": "train", "epoch": 1, "iter": it, "lr": 0.001, "loss": 2.0 - it / 200})
    lines.append({"mode": "val", "epoch": 1, "iter": 200, "lr": 0.001, "aAcc": 0.7, "mIoU": 0.4, "mAcc": 0.5})
    return "\n".join(json.dumps(line) for line in lines).encode()


class Mirror:
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server

    def serve(self, name: str, data: Optional[bytes] = None, seed: int = 0, log: Optional[bytes] = None,
              **record: Any) -> Artifact:
        """Serve ``name``'s checkpoint (``record``: see :func:`checkpoint_bytes`) and its log
        (``log``, default: one whose config and seed agree with the checkpoint)."""
        art = get_artifact(name)
        self.server.add(mirror_path(art.url), data if data is not None else checkpoint_bytes(art, seed, **record))
        if art.log_url:
            md_r = record.get("md_r", REGISTRY)
            default_log = training_log(seed=record.get("train_seed", 1234),
                                       md_r=art.md_r if md_r == REGISTRY else md_r)
            self.server.add(mirror_path(art.log_url), log if log is not None else default_log)
        return art

    def gets(self, url: str) -> int:
        return self.server.count(mirror_path(url))
