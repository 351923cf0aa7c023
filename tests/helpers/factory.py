"""Checkpoints in every published layout, generated from realistic random weights.

Published weights cannot be downloaded here, so tests build files with the same
containers and key names: MMSeg 1.x (MMEngine ``Runner.save_checkpoint``: meta with cfg
text, seed and dataset_meta, a ``message_hub`` holding mmengine ``HistoryBuffer``
objects, optimizer, param_schedulers), the official repo (mmcv 1.x ``save_checkpoint``:
meta with config text, seed, CLASSES, PALETTE, env_info, versions; a state dict with
``_metadata``; optimizer; DWConv names), official ImageNet backbones (classifier head, DDP
prefix) and Jittor .pkl. What the runners write is described in shared/UPSTREAM.md
section 7; tests/conversion/test_real_containers.py (parity-marked) checks the MMEngine
container against one written by the real mmengine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
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


# --------------------------------------------------------------------------- config text

_EMBED = {"t": "[32, 64, 160, 256]", "s": "[64, 128, 320, 512]", "b": "[64, 128, 320, 512]",
          "l": "[64, 128, 320, 512]"}
_DEPTHS = {"t": "[3, 3, 5, 2]", "s": "[2, 2, 4, 2]", "b": "[3, 3, 12, 3]", "l": "[3, 5, 27, 3]"}


def config_text(variant: str = "t", *, num_classes: int = 150, md_r: Optional[int] = 16, seed: int = 0,
                engine: bool = False) -> str:
    """Config text as the runners dump it (abridged). ``md_r`` None: no ``ham_kwargs`` at all,
    as in the official B/L configs; mmcv's T/S dump shows the dict the NMF's ``setdefault``
    filled; MMEngine's ``pretty_text`` shows what the 1.x config sets. mmcv's
    ``tools/train.py`` writes the seed it used into the config (``seed = N``)."""
    ham = ""
    if md_r is not None:
        ham = (f"        ham_kwargs=dict(MD_S=1, MD_R={md_r}, train_steps=6, eval_steps=7, inv_t=100,"
               " rand_init=True)),\n" if engine else
               f"        ham_kwargs=dict(MD_R={md_r}, SPATIAL=True, MD_S=1, MD_D=512, TRAIN_STEPS=6,"
               " EVAL_STEPS=7, INV_T=100, ETA=0.9, RAND_INIT=True)),\n")
    head_end = "" if ham else "        align_corners=False),\n"
    text = (
        f"norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
        f"ham_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)\n"
        f"model = dict(\n"
        f"    type='EncoderDecoder',\n"
        f"    backbone=dict(type='MSCAN', embed_dims={_EMBED[variant]}, mlp_ratios=[8, 8, 4, 4],\n"
        f"        drop_rate=0.0, drop_path_rate=0.1, depths={_DEPTHS[variant]},\n"
        f"        norm_cfg=dict(type='SyncBN', requires_grad=True)),\n"
        f"    decode_head=dict(\n"
        f"        type='LightHamHead',\n"
        f"        in_channels={_EMBED[variant].replace('[32, ', '[').replace('[64, ', '[')},\n"
        f"        in_index=[1, 2, 3],\n"
        f"        channels=256,\n"
        f"        ham_channels=256,\n"
        f"        dropout_ratio=0.1,\n"
        f"        num_classes={num_classes},\n"
        f"        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),\n"
        f"        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),\n"
        + (ham or head_end) +
        "    train_cfg=dict(),\n"
        "    test_cfg=dict(mode='whole'))\n"
        "dataset_type = 'ADE20KDataset'\n"
        "optimizer = dict(type='AdamW', lr=6e-05, betas=(0.9, 0.999), weight_decay=0.01)\n"
    )
    if engine:
        text += "default_scope = 'mmseg'\nlauncher = 'pytorch'\nwork_dir = './work_dirs/segnext'\n"
    else:
        text += f"work_dir = './work_dirs/segnext'\ngpu_ids = range(0, 8)\nseed = {seed}\n"
    return text


# --------------------------------------------------------------------------- mmcv 1.x runner


def _default_space(num_classes: int) -> tuple:
    """The dataset's names and colours, as a run on ADE20K/Cityscapes records them."""
    from segnext_hub.datasets import label_space

    space = label_space(num_classes)
    return space.classes, space.palette


def with_metadata(state: dict) -> "OrderedDict[str, torch.Tensor]":
    """An OrderedDict carrying ``_metadata`` (module name -> version), as ``Module.state_dict()``
    returns and pickles it."""
    out = OrderedDict(state)
    prefixes = {""} | {k.rsplit(".", 1)[0] for k in state if "." in k}
    out._metadata = OrderedDict((p, {"version": 1}) for p in sorted(prefixes))  # type: ignore[attr-defined]
    return out


def _adamw_state(state: dict) -> dict:
    """AdamW's state_dict, with moments for the first parameter only (size stays small)."""
    first = next(iter(state.values()))
    return {"state": {0: {"step": torch.tensor(160000.0), "exp_avg": torch.zeros_like(first),
                          "exp_avg_sq": torch.zeros_like(first)}},
            "param_groups": [{"lr": 6e-11, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.01,
                              "amsgrad": False, "initial_lr": 6e-05, "params": list(range(len(state)))}]}


def mmcv_checkpoint(state: dict, *, variant: str = "t", md_r: Optional[int] = 16, seed: int = 0,
                    classes: Optional[Sequence[str]] = None, palette: Optional[Sequence[Sequence[int]]] = None,
                    num_classes: Optional[int] = None) -> dict:
    """What mmcv 1.x ``save_checkpoint`` writes for the official repo / MMSeg 0.x:
    ``meta`` (config text, seed, CLASSES tuple, PALETTE, env_info, versions, exp_name,
    epoch/iter/time), a state dict with ``_metadata`` and the optimizer."""
    n = num_classes or (len(classes) if classes else 150)
    meta = {
        "env_info": "sys.platform: linux\nPython: 3.8.13\nCUDA available: True\nPyTorch: 1.11.0\n"
                    "MMCV: 1.5.0\nMMSegmentation: 0.24.1+",
        "config": config_text(variant, num_classes=n, md_r=md_r, seed=seed),
        "seed": seed,
        "exp_name": f"segnext.{variant}.512x512.ade.160k.py",
        "mmseg_version": "0.24.1+",
        "CLASSES": tuple(classes or _default_space(n)[0]),
        "PALETTE": [list(c) for c in (palette or _default_space(n)[1])],
        "mmcv_version": "1.5.0",
        "time": "Thu Jun 16 08:23:02 2022",
        "epoch": 1,
        "iter": 160000,
    }
    return {"meta": meta, "state_dict": with_metadata(state), "optimizer": _adamw_state(state)}


# --------------------------------------------------------------------------- MMEngine runner

_HB_MODULE = "mmengine.logging.history_buffer"


class HistoryBuffer:
    """Pickles under mmengine's name (module ``mmengine.logging.history_buffer``): its state
    carries ``statistics_methods`` whose functions pickle as ``builtins.getattr(HistoryBuffer,
    'min')``, numpy arrays for the history, as mmengine 0.10.7's ``__getstate__`` writes it."""

    _statistics_methods: dict = {}

    def __init__(self, log_history: Sequence[float] = (), count_history: Sequence[int] = (),
                 max_length: int = 1000000) -> None:
        self.max_length = max_length
        self._log_history = np.array(log_history)
        self._count_history = np.array(count_history)
        self._statistics_methods.setdefault("min", HistoryBuffer.min)
        self._statistics_methods.setdefault("max", HistoryBuffer.max)
        self._statistics_methods.setdefault("current", HistoryBuffer.current)
        self._statistics_methods.setdefault("mean", HistoryBuffer.mean)

    def min(self) -> float:
        return float(self._log_history.min())

    def max(self) -> float:
        return float(self._log_history.max())

    def current(self) -> float:
        return float(self._log_history[-1])

    def mean(self) -> float:
        return float(self._log_history.mean())

    def __getstate__(self) -> dict:
        self.__dict__.update(statistics_methods=self._statistics_methods)
        return self.__dict__


HistoryBuffer.__module__ = _HB_MODULE
for _method in (HistoryBuffer.min, HistoryBuffer.max, HistoryBuffer.current, HistoryBuffer.mean):
    _method.__module__ = _HB_MODULE


@contextlib.contextmanager
def _mmengine_names() -> Iterator[None]:
    """Let pickle find ``mmengine.logging.history_buffer.HistoryBuffer`` (pickle imports the
    module to check a global) without mmengine; the previous modules come back after."""
    names = ("mmengine", "mmengine.logging", _HB_MODULE)
    saved = {name: sys.modules.get(name) for name in names}
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[_HB_MODULE].HistoryBuffer = HistoryBuffer  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def mmengine_checkpoint(state: dict, *, variant: str = "t", md_r: Optional[int] = 16, seed: int = 0,
                        classes: Optional[Sequence[str]] = None, palette: Optional[Sequence[Sequence[int]]] = None,
                        num_classes: Optional[int] = None) -> dict:
    """What MMEngine ``Runner.save_checkpoint`` writes for MMSeg 1.x: ``meta`` (cfg text,
    seed, experiment_name, time, mmengine_version, dataset_meta, epoch, iter),
    ``state_dict``, ``message_hub`` (log_scalars of HistoryBuffer, runtime_info with cfg,
    seed, dataset_meta..., resumed_keys), ``optimizer`` and ``param_schedulers``."""
    n = num_classes or (len(classes) if classes else 150)
    cfg = config_text(variant, num_classes=n, md_r=md_r, seed=seed, engine=True)
    dataset_meta = {
        "classes": tuple(classes or _default_space(n)[0]),
        "palette": [list(c) for c in (palette or _default_space(n)[1])],
        "label_map": None, "reduce_zero_label": True}
    name = f"segnext_mscan-{variant}_1xb16-adamw-160k_ade20k-512x512"
    meta = {"epoch": 0, "iter": 160000, "cfg": cfg, "seed": seed, "experiment_name": f"{name}_20230210_140244",
            "time": "20230210_140244", "mmengine_version": "0.4.0", "dataset_meta": dataset_meta}
    scalars = OrderedDict((key, HistoryBuffer([0.5, 0.4], [1, 1])) for key in ("train/lr", "train/loss", "train/time"))
    runtime_info = OrderedDict(cfg=cfg, seed=seed, experiment_name=meta["experiment_name"],
                               mmengine_version="0.4.0", dataset_meta=dataset_meta, epoch=0, iter=160000,
                               max_iters=160000, max_epochs=1, eta=np.float64(0.0),
                               last_ckpt=f"work_dirs/{name}/iter_160000.pth")
    resumed = OrderedDict((k, True) for k in list(scalars) + list(runtime_info))
    message_hub = {"log_scalars": scalars, "runtime_info": runtime_info, "resumed_keys": resumed}
    common = {"total_iters": 0, "param_name": "lr", "by_epoch": False, "base_values": [6e-05],
              "_global_step": 160000, "verbose": False}
    schedulers = [dict(common, start_factor=1e-06, end_factor=1.0, begin=0, end=1500, last_step=1500,
                       _last_value=[6e-05]),
                  dict(common, eta_min=0.0, power=1.0, begin=1500, end=160000, last_step=158500, _last_value=[0.0])]
    return {"meta": meta, "state_dict": with_metadata(state), "message_hub": message_hub,
            "optimizer": _adamw_state(state), "param_schedulers": schedulers}


def save(obj: Any, dst: Any) -> Any:
    """``torch.save`` with mmengine's HistoryBuffer name resolvable (a path or a buffer)."""
    with _mmengine_names():
        torch.save(obj, dst)
    return dst


def to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    save(obj, buf)
    return buf.getvalue()


def mmcv_meta(md_r: Optional[int] = None) -> dict:
    """The mmcv 1.x meta alone (tests that only need a meta)."""
    return mmcv_checkpoint({"w": torch.zeros(1)}, md_r=md_r, num_classes=150)["meta"]


OFFICIAL = "official"  # md_r as the official configs have it: T/S MD_R=16, B/L no ham_kwargs (64)


def write_mmseg(path: Path, state: dict, **record: Any) -> Path:
    """An MMSeg 1.x checkpoint as MMEngine writes it; ``record``: md_r, seed, classes, palette."""
    return save(mmengine_checkpoint(state, **_described(state, record)), path)


def write_official(path: Path, state: dict, md_r: Any = OFFICIAL, **record: Any) -> Path:
    """An official-repo checkpoint as mmcv 1.x writes it; ``md_r`` None: no ham_kwargs."""
    return save(mmcv_checkpoint(to_official(state), **_described(state, dict(record, md_r=md_r))), path)


def _described(state: dict, record: dict) -> dict:
    """Variant and class count from the weights, so the config text matches them."""
    from segnext_hub.conversion.detect import detect_variant

    variant = detect_variant(state)
    weight = state.get("decode_head.conv_seg.weight")
    if record.get("md_r", None) == OFFICIAL:
        record["md_r"] = 16 if variant in ("t", "s") else None
    return dict(record, variant=variant, num_classes=int(weight.shape[0]) if weight is not None else None)


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
