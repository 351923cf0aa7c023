"""``load``: one call from a name, a file or a Hub repo to an eval-mode model.

``resolve`` is the one rule that tells a registry name from a path from an ``hf://`` repo;
every command and function that takes "a name or a path" goes through it.

Weights are read with safetensors straight into a model built on the meta device
(``load_state_dict(assign=True)``), so loading allocates the weights once and never runs
a random initialiser -- that is most of what makes a warm load fast.
"""

from __future__ import annotations

import copy
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .conversion.converter import convert_checkpoint
from .conversion.reading import read_checkpoint
from .conversion.verify import check_keys
from .errors import BadInputError
from .hub.config import CONFIG_FILE, MODEL_FILE, config_from_metadata, read_config
from .hub.hf import download_repo
from .hub.pull import pull
from .hub.registry import get_artifact
from .models import create_model


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



def load_folder(folder: Path, **kwargs: Any) -> nn.Module:
    """A cache or Hub folder with model.safetensors + config.json."""
    config_file, weights = folder / CONFIG_FILE, folder / MODEL_FILE
    if not config_file.is_file() or not weights.is_file():
        raise BadInputError(f"{folder} has no {MODEL_FILE} + {CONFIG_FILE}")
    config = read_config(config_file)
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
        config = config_from_metadata(meta)
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
    from .models.fused.model import fuse

    fused = fuse(model)
    fused.segnext_config = model.segnext_config
    return fused


def _load_exact(name_or_path: Union[str, Path], *, device: Union[str, torch.device], dtype: Optional[torch.dtype],
                md_r: Optional[int], progress: Optional[bool]) -> nn.Module:
    kwargs = {"device": device, "dtype": dtype, "md_r": md_r}
    source = resolve(name_or_path)
    if source.kind == "hf":
        return load_folder(download_repo(source.name), **kwargs)
    if source.kind == "path":
        return load_file_path(source.path, **kwargs)
    return load_folder(pull(source.name, progress=progress).path, **kwargs)


HF_SCHEME = "hf://"
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".pkl", ".bin", ".ckpt")


@dataclass(frozen=True)
class Source:
    """What a "name or path" argument designates: a registry ``name``, an ``hf`` repo
    (``name`` is ``org/repo[@rev]``) or a local ``path`` (file or folder)."""

    kind: str  # "registry" | "hf" | "path"
    name: str
    path: Optional[Path] = None


def resolve(name_or_path: Union[str, Path]) -> Source:
    """The one rule, documented in README ("Names and paths"):

    * ``hf://org/repo[@revision]`` is a Hugging Face repo;
    * a ``Path`` object, or text with a path separator, a leading ``.`` or ``~``, or a
      checkpoint suffix, is a local path (``./mscan-t`` is the folder named mscan-t);
    * any other text is a registry name, even where a file of that name exists, which is
      then mentioned on stderr, so a local folder never silently shadows a published model.
    """
    if isinstance(name_or_path, Path):
        return _local(name_or_path)
    text = str(name_or_path).strip()
    if text.startswith(HF_SCHEME):
        return Source("hf", text[len(HF_SCHEME):])
    if (any(sep in text for sep in ("/", "\\")) or text.startswith((".", "~"))
            or text.lower().endswith(_CHECKPOINT_SUFFIXES)):
        return _local(Path(text))
    artifact = get_artifact(text)  # unknown names: one line with "did you mean"
    if Path(text).exists():
        print(f"note: {text!r} is the registry artifact {artifact.name}; write ./{text} for the local "
              "path of that name", file=sys.stderr)
    return Source("registry", artifact.name)


def _local(path: Path) -> Source:
    path = path.expanduser()
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder")
    return Source("path", str(path), path)
