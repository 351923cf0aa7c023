"""Checkpoints in every published layout, generated from realistic random weights.

Published weights cannot be downloaded here, so tests build files with the same
containers and key names: MMSeg 1.x, the official repo (mmcv runner meta, DWConv
names), official ImageNet backbones (classifier head, DDP prefix) and Jittor .pkl.
"""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch

from segnext_hub import create_model
from segnext_hub.conversion.keymap import load_key_map
from segnext_hub.models.random_init import randomize_

_CACHE: dict = {}


def mmseg_state(variant: str = "t", *, seed: int = 0, num_classes: int = 150, md_r: Optional[int] = None,
                backbone_only: bool = False) -> "OrderedDict[str, torch.Tensor]":
    key = (variant, seed, num_classes, md_r, backbone_only)
    if key not in _CACHE:
        model = randomize_(create_model(variant, num_classes=num_classes, md_r=md_r,
                                        backbone_only=backbone_only), seed=seed)
        _CACHE[key] = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    return OrderedDict((k, v.clone()) for k, v in _CACHE[key].items())


def to_official(state: dict) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict(load_key_map("official").inverted().apply(state).tensors)


def to_jittor(state: dict) -> dict:
    """Official names, numpy arrays, no BatchNorm counters."""
    return {k: v.numpy() for k, v in to_official(state).items() if not k.endswith("num_batches_tracked")}


def mmcv_meta(md_r: Optional[int] = None) -> dict:
    config = "model = dict(type='EncoderDecoder', decode_head=dict(type='LightHamHead', "
    if md_r is not None:
        config += f"ham_kwargs=dict(MD_S=1, MD_R={md_r}, train_steps=6, eval_steps=7)"
    config += "))\n"
    return {"mmcv_version": "1.5.0", "config": config, "seed": 42, "CLASSES": ["wall"], "PALETTE": [[1, 2, 3]]}


def write_mmseg(path: Path, state: dict) -> Path:
    torch.save({"meta": {"dataset_meta": {"classes": ["a"]}}, "state_dict": state}, path)
    return path


def write_official(path: Path, state: dict, md_r: Optional[int] = None) -> Path:
    torch.save({"meta": mmcv_meta(md_r), "state_dict": to_official(state)}, path)
    return path


def write_official_in1k(path: Path, backbone_state: dict, ddp: bool = True) -> Path:
    state = to_official(backbone_state)
    c4 = state["norm4.weight"].shape[0]
    state["head.weight"] = torch.randn(1000, c4)
    state["head.bias"] = torch.randn(1000)
    if ddp:
        state = OrderedDict((f"module.{k}", v) for k, v in state.items())
    torch.save({"state_dict": state, "epoch": 300}, path)
    return path


def jittor_bytes(obj) -> bytes:
    payload = pickle.dumps(obj, protocol=4)
    return payload + hashlib.sha1(payload).digest() + b"HCAJSLHD"


def write_jittor(path: Path, state: dict) -> Path:
    path.write_bytes(jittor_bytes(to_jittor(state)))
    return path
