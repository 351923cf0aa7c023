"""Serve generated checkpoints at the registry's URLs on a loopback mirror (the ``mirror``
fixture in tests/conftest.py wires one through the environment)."""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from urllib.parse import urlsplit

import torch

from segnext_hub.hub.registry import Artifact, get_artifact
from tests.helpers import factory
from tests.helpers.http_server import LoopbackServer


def mirror_path(url: str) -> str:
    parts = urlsplit(url)
    return f"/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def checkpoint_bytes(art: Artifact, seed: int = 0) -> bytes:
    """A file in the artifact's published layout, with random weights of its size."""
    backbone = art.kind == "backbone"
    state = factory.mmseg_state(art.variant, seed=seed, num_classes=art.num_classes or 150,
                                md_r=art.md_r, backbone_only=backbone)
    buf = io.BytesIO()
    if art.layout == "jittor":
        return factory.jittor_bytes(factory.to_jittor(state))
    if art.layout == "official":
        if backbone:
            official = factory.to_official(state)
            official["head.weight"] = torch.zeros(1000, official["norm4.weight"].shape[0])
            official["head.bias"] = torch.zeros(1000)
            torch.save({"state_dict": official}, buf)
        else:
            torch.save({"meta": factory.mmcv_meta(art.md_r), "state_dict": factory.to_official(state)}, buf)
        return buf.getvalue()
    torch.save({"meta": {"dataset_meta": {"classes": ["x"]}}, "state_dict": OrderedDict(state)}, buf)
    return buf.getvalue()


def training_log() -> bytes:
    lines = [{"env_info": "torch", "seed": 1234, "config": "ham_kwargs=dict(MD_S=1, MD_R=16)"}]
    for it in range(50, 201, 50):
        lines.append({"mode": "train", "iter": it, "lr": 0.001, "loss": 2.0 - it / 200})
    lines.append({"mode": "val", "iter": 200, "aAcc": 0.7, "mIoU": 0.4, "mAcc": 0.5})
    return "\n".join(json.dumps(l) for l in lines).encode()


class Mirror:
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server

    def serve(self, name: str, data: bytes | None = None, seed: int = 0) -> Artifact:
        art = get_artifact(name)
        self.server.add(mirror_path(art.url), data if data is not None else checkpoint_bytes(art, seed))
        if art.log_url:
            self.server.add(mirror_path(art.log_url), training_log())
        return art

    def gets(self, url: str) -> int:
        return self.server.count(mirror_path(url))

