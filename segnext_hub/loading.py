"""``load``: one call from a name, a file or a Hub repo to an eval-mode model.

Weights are read with safetensors straight into a model built on the meta device
(``load_state_dict(assign=True)``), so loading allocates the weights once and never runs
a random initialiser -- that is most of what makes a warm load fast.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .checkpoint import read_checkpoint
from .converter import convert_checkpoint
from .errors import BadInputError
from .models import create_model
from .verify import check_keys

HF_SCHEME = "hf://"


@functools.lru_cache(maxsize=16)
def _meta_skeleton(variant: str, num_classes: int, md_r: Optional[int], backbone_only: bool) -> nn.Module:
    """Building the module tree costs more than reading the weights (Python overhead of
    ~900 modules); a deepcopy of a cached meta-device tree costs a third of that."""
    with torch.device("meta"):
        return create_model(variant, num_classes=num_classes, md_r=md_r, backbone_only=backbone_only)


def _copy_with_weights(skeleton: nn.Module, slots: dict[str, torch.Tensor],
                       state: dict[str, torch.Tensor]) -> nn.Module:
    """Deep-copy the meta skeleton with every meta tensor replaced by the loaded one.

    deepcopy's memo maps each meta parameter/buffer straight to its real value, so the
    copy is the finished model, without ``load_state_dict``'s per-module Python walk.
    The caller has checked keys and shapes (:func:`verify.check_keys`).
    """
    memo: dict[int, Any] = {}
    for key, slot in slots.items():
        value = state[key]
        if isinstance(slot, nn.Parameter):
            value = nn.Parameter(value, requires_grad=slot.requires_grad)
        memo[id(slot)] = value
    return copy.deepcopy(skeleton, memo)


def build_from_config(config: dict[str, Any], state: dict[str, torch.Tensor], *,
                      md_r: Optional[int] = None, device: Union[str, torch.device] = "cpu",
                      dtype: Optional[torch.dtype] = None) -> nn.Module:
    """An eval-mode model from a config (variant, kind, num_classes, md_r) and MMSeg-named tensors."""
    backbone_only = config.get("kind") == "backbone"
    num_classes = config.get("num_classes") or 150
    rank = md_r if md_r is not None else config.get("md_r")
    skeleton = _meta_skeleton(config["variant"], num_classes, rank, backbone_only)
    expected = skeleton.state_dict(keep_vars=True)
    check_keys(state, expected)
    model = _copy_with_weights(skeleton, expected, state)
    if dtype is not None:
        model = model.to(dtype=dtype)
    model = model.to(device)
    model.segnext_config = dict(config, md_r=rank if not backbone_only else None)
    return model.eval()


def _config_from_metadata(meta: dict[str, str]) -> Optional[dict[str, Any]]:
    if meta.get("architecture") != "segnext" or meta.get("layout", "mmseg") != "mmseg":
        return None
    config: dict[str, Any] = {"variant": meta["variant"], "kind": meta.get("kind", "segmentor")}
    if config["kind"] == "segmentor":
        config.update(num_classes=int(meta["num_classes"]), md_r=int(meta["md_r"]),
                      md_r_source=meta.get("md_r_source"), dataset=meta.get("dataset"))
    return config


def load_folder(folder: Path, **kwargs: Any) -> nn.Module:
    """A cache or Hub folder with model.safetensors + config.json."""
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise BadInputError(f"{folder} has no model.safetensors + config.json")
    config = json.loads(config_file.read_text())
    return build_from_config(config, load_file(weights), **kwargs)


def load_file_path(path: Path, **kwargs: Any) -> nn.Module:
    """A local checkpoint: our own safetensors load directly, anything else is converted."""
    if path.is_dir():
        return load_folder(path, **kwargs)
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), "pt") as handle:
                meta = handle.metadata() or {}
        except Exception as err:  # noqa: BLE001 - any parse failure is bad input
            raise BadInputError(f"cannot read {path}: {err}".splitlines()[0]) from None
        config = _config_from_metadata(meta)
        if config is not None:
            return build_from_config(config, load_file(str(path)), **kwargs)
    conversion = convert_checkpoint(read_checkpoint(path), md_r=kwargs.get("md_r"))
    det = conversion.detection
    config = {"variant": det.variant, "kind": det.kind, "num_classes": det.num_classes, "md_r": det.md_r,
              "md_r_source": det.sources.get("md_r"), "dataset": det.dataset}
    return build_from_config(config, conversion.tensors, **kwargs)


def load(name_or_path: Union[str, Path], *, device: Union[str, torch.device] = "cpu",
         dtype: Optional[torch.dtype] = None, md_r: Optional[int] = None,
         progress: Optional[bool] = None, fast: bool = False) -> nn.Module:
    """An eval-mode SegNeXt (or MSCAN for backbone artifacts) ready for inference.

    ``name_or_path``: a registry name (pulled into the cache if needed, see
    ``segnext-hub list``), a local ``.safetensors``/``.pth``/``.pkl`` (converted on the fly
    when in another layout), a cache folder, or ``hf://org/repo``. ``md_r`` overrides the
    NMF rank recorded with the weights. ``fast=True`` returns the fused inference-only
    model (folded norms, fused kernels; equal up to rounding, see README "Fast inference").
    """
    model = _load_exact(name_or_path, device=device, dtype=dtype, md_r=md_r, progress=progress)
    if not fast:
        return model
    from .models.fused import fuse

    fused = fuse(model)
    fused.segnext_config = model.segnext_config
    return fused


def _load_exact(name_or_path: Union[str, Path], *, device: Union[str, torch.device], dtype: Optional[torch.dtype],
                md_r: Optional[int], progress: Optional[bool]) -> nn.Module:
    kwargs = {"device": device, "dtype": dtype, "md_r": md_r}
    text = str(name_or_path)
    if text.startswith(HF_SCHEME):
        from .hf import download_repo

        return load_folder(download_repo(text[len(HF_SCHEME):]), **kwargs)
    path = Path(text).expanduser()
    if path.exists() or any(sep in text for sep in ("/", "\\")) or path.suffix:
        if not path.exists():
            raise BadInputError(f"{path}: no such file")
        return load_file_path(path, **kwargs)
    from .hub import pull

    return load_folder(pull(text, progress=progress).path, **kwargs)
