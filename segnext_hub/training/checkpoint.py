"""Training checkpoints: weights that ``segnext_hub.load`` reads, and the state a run resumes from.

Two files, so that the weights stay an ordinary segnext-hub ``.safetensors`` (MMSeg key
names, the config in its header: variant, classes, palette, MD_R) that every command
loads, converts and predicts with: ``last.safetensors`` and, when an optimiser is
given, ``last.train-state.pt`` (optimiser, scheduler, iteration, RNG state; plain
containers, read with ``torch.load(weights_only=True)``). Both are written atomically
(temp file, then rename); each records the iteration, and resuming refuses a pair whose
iterations differ (a run stopped between the two writes), so a run never continues from
weights and moments of different steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .._version import __version__
from ..config import ArtifactConfig
from ..conversion.detect import detect_variant
from ..conversion.verify import check_keys
from ..conversion.writing import write_pth, write_safetensors
from ..datasets import label_space
from ..errors import BadInputError
from ..loading import map_safetensors, safetensors_metadata
from ..models import MSCAN, SegNeXt

STATE_SUFFIX = ".train-state.pt"


def state_path(path: Union[str, Path]) -> Path:
    """The training-state file that goes with the weights at ``path``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + STATE_SUFFIX)


def save_checkpoint(path: Union[str, Path], model: nn.Module, *, classes: Optional[Sequence[str]] = None,
                    palette: Optional[Sequence[Sequence[int]]] = None, optimizer: Optional[Optimizer] = None,
                    scheduler: Optional[LRScheduler] = None, iteration: Optional[int] = None,
                    extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model``'s weights to ``path`` (a ``.safetensors``) and, with an ``optimizer``,
    the training state next to it; returns ``path``. Existing files are replaced.

    ``classes``/``palette`` name the outputs (lengths must equal the head's classes; a
    class list without a palette gets the default colours, stored so they stay fixed).
    ``iteration``: the number of iterations done. ``extra``: plain values (numbers, text,
    lists, dicts) the run wants back on resume.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise BadInputError(f"{path}: checkpoints are written as .safetensors")
    if not isinstance(model, (SegNeXt, MSCAN)):
        raise BadInputError(f"cannot save a {type(model).__name__}: only SegNeXt and MSCAN models "
                            "(a fused model is inference-only; save the model it was made from)")
    tensors = {key: value.detach().to("cpu") for key, value in model.state_dict().items()}
    metadata = _metadata(model, tensors, classes, palette, iteration)
    write_safetensors(path, tensors, metadata, force=True)
    if optimizer is not None:
        state = {
            "iteration": iteration,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "extra": extra or {},
            "segnext_hub_version": __version__,
        }
        write_pth(state_path(path), state, force=True)
    return path


def _metadata(model: nn.Module, tensors: dict[str, torch.Tensor], classes: Optional[Sequence[str]],
              palette: Optional[Sequence[Sequence[int]]], iteration: Optional[int]) -> dict[str, str]:
    segmentor = isinstance(model, SegNeXt)
    config = model.segnext_config or ArtifactConfig(
        variant=detect_variant(tensors), kind="segmentor" if segmentor else "backbone",
        num_classes=model.decode_head.num_classes if segmentor else None)
    if not segmentor:
        if classes is not None or palette is not None:
            raise BadInputError("a backbone has no classes: classes/palette only go with a segmentor")
    else:
        num_classes = model.decode_head.num_classes
        for name, values in (("classes", classes), ("palette", palette)):
            if values is not None and len(values) != num_classes:
                raise BadInputError(f"{len(values)} {name} for a {num_classes}-class head")
        # The trained head is the truth about classes and rank, whatever the config said.
        config = config.replace(num_classes=num_classes, md_r=model.decode_head.md_r,
                                ham_channels=model.decode_head.ham_channels,
                                md_r_source=config.md_r_source or "the trained model's head")
        if classes is not None:
            space = label_space(num_classes, None, list(classes), palette)
            config = config.replace(classes=tuple(str(c) for c in classes), classes_source="save_checkpoint",
                                    palette=space.palette, palette_source="save_checkpoint")
        elif palette is not None:
            config = config.replace(palette=tuple(tuple(int(v) for v in rgb) for rgb in palette),
                                    palette_source="save_checkpoint")
    meta = config.replace(new_weights=()).to_metadata()  # every weight is the saved model's now
    meta.update(layout="mmseg", source="segnext_hub.training.save_checkpoint")
    if iteration is not None:
        meta["iteration"] = str(int(iteration))
    return meta


def resume_checkpoint(path: Union[str, Path], model: nn.Module, optimizer: Optional[Optimizer] = None,
                      scheduler: Optional[LRScheduler] = None) -> dict[str, Any]:
    """Put a checkpoint's weights into ``model`` (and, if given, the optimiser's and
    scheduler's state, and the global torch RNG); returns ``{"iteration", "extra"}``.

    The model must be the same variant and class count as the checkpoint (build it with
    ``load(path)`` or ``create_model``); the optimiser must have been built the same way
    (same parameter groups) as the saved one.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"no checkpoint at {path}")
    meta = safetensors_metadata(path)
    config = ArtifactConfig.from_metadata(meta, f"{path} metadata")
    if config is None:
        raise BadInputError(f"{path} is not a segnext-hub checkpoint (no SegNeXt config in its header)")
    tensors = map_safetensors(path)
    try:
        check_keys(tensors, model.state_dict())
    except BadInputError as err:
        raise BadInputError(f"{path} holds a SegNeXt-{config.variant.upper()} {config.kind} with "
                            f"{config.num_classes} classes; it does not fit this model ({err})") from None
    model.load_state_dict(tensors)
    iteration = int(meta["iteration"]) if meta.get("iteration", "").isdigit() else None
    result: dict[str, Any] = {"iteration": iteration, "extra": {}}
    if optimizer is None and scheduler is None:
        return result
    state_file = state_path(path)
    if not state_file.is_file():
        raise BadInputError(f"{state_file.name} is missing next to {path.name}: the weights alone cannot "
                            "resume a run (load them with segnext_hub.load to fine-tune afresh)")
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is bad input
        raise BadInputError(f"cannot read {state_file}: {err}".splitlines()[0]) from None
    if state.get("iteration") != iteration:
        raise BadInputError(f"{state_file.name} is from iteration {state.get('iteration')} but {path.name} from "
                            f"{iteration} (the run stopped between the two writes); resume from another checkpoint")
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    result["extra"] = state.get("extra") or {}
    return result
