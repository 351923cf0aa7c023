"""Image files in, class maps and pictures out: what ``segnext-hub predict`` and the demo run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from ..datasets import LabelSpace, label_space
from ..errors import BadInputError
from ..fileio import atomic_write_bytes
from ..progress import progress_bar
from .evaluate import LAYOUTS, load_image
from .visualize import save_outputs


def test_settings(model: Any, mode: Optional[str] = None) -> dict[str, Any]:
    """predict() keyword arguments from the model's config (test mode, resize, crop, stride)."""
    config = getattr(model, "segnext_config", {}) or {}
    settings: dict[str, Any] = {"mode": "whole"}
    layout = LAYOUTS.get(config.get("dataset") or "")
    if layout is not None:  # evaluate's per-dataset MMSeg test settings
        settings = {"mode": layout.mode, "scale": layout.scale, "crop_size": layout.crop_size,
                    "stride": layout.stride}
    if config.get("test_mode"):
        settings["mode"] = config["test_mode"]
    if config.get("resize_scale"):
        settings["scale"] = tuple(config["resize_scale"])
    if config.get("test_crop_size"):
        settings["crop_size"] = tuple(config["test_crop_size"])
    if config.get("test_stride"):
        settings["stride"] = tuple(config["test_stride"])
    if mode is not None:
        settings["mode"] = mode
    if settings["mode"] == "slide":
        settings.setdefault("crop_size", (1024, 1024))
        settings.setdefault("stride", (768, 768))
    return settings


LEGEND_FILE = "legend.json"


def model_label_space(model: Any) -> LabelSpace:
    """The classes and colours a model's outputs are shown with: those the artifact
    recorded (config.json / safetensors metadata / checkpoint meta), else its dataset's."""
    config = getattr(model, "segnext_config", {}) or {}
    return label_space(int(model.num_classes), config.get("dataset"), config.get("classes"), config.get("palette"))


def write_legend(space: LabelSpace, out: Path) -> Path:
    """``legend.json``: class index -> name and RGB colour, as the colour PNGs use them."""
    legend = {"source": space.source, "classes": [
        {"index": i, "name": name, "color": list(rgb)} for i, (name, rgb) in enumerate(zip(space.classes, space.palette))]}
    atomic_write_bytes(out / LEGEND_FILE, json.dumps(legend, indent=1).encode(), force=True)
    return out / LEGEND_FILE


def predict_files(
    model: Any,
    images: Sequence[Union[str, os.PathLike]],
    out_dir: Union[str, os.PathLike],
    *,
    mode: Optional[str] = None,
    seed: Optional[int] = 0,
    progress: Optional[bool] = None,
) -> list[dict[str, Path]]:
    """Predict each image and write ``<stem>_classes.png``, ``_color.png``, ``_overlay.png``,
    and one ``legend.json`` naming each class index and its colour.

    ``seed``: ``torch.manual_seed(seed)`` before each image, so a result does not depend
    on which images came before it (None: leave the global RNG alone).
    """
    if not hasattr(model, "predict"):
        raise BadInputError("predict needs a segmentor; this artifact is a backbone only")
    paths = [Path(p) for p in images]
    for path in paths:
        if not path.is_file():
            raise BadInputError(f"image {path} does not exist")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = test_settings(model, mode)
    space = model_label_space(model)
    palette = space.palette_array()
    write_legend(space, out)
    stems = [p.stem for p in paths]
    written = []
    with progress_bar(len(paths), "predict", progress if len(paths) > 1 else False, unit="img") as bar:
        for path in paths:
            rgb = load_image(path)
            if seed is not None:
                torch.manual_seed(seed)
            (pred,) = model.predict(rgb, **settings)
            stem = path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}_{path.stem}"
            written.append(save_outputs(rgb, pred.mask.numpy(), palette, out, stem))
            bar.update(1)
    return written
