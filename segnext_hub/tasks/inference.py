"""Image files in, class maps and pictures out: what ``segnext-hub predict`` and the demo run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..datasets import LabelSpace, label_space
from ..errors import BadInputError
from ..fileio import atomic_write_bytes
from ..models.predict import check_sizes
from ..models.preprocessing import resize_for_test
from ..progress import progress_bar
from .evaluate import DATASET_LAYOUTS, load_image
from .visualize import save_outputs


def test_settings(model: Any, mode: Optional[str] = None) -> dict[str, Any]:
    """predict() keyword arguments from the model's config (test mode, resize, crop, stride)."""
    config = model.segnext_config
    settings: dict[str, Any] = {"mode": "whole"}
    layout = DATASET_LAYOUTS.get(config.dataset or "") if config else None
    if layout is not None:  # evaluate's per-dataset MMSeg test settings
        settings = {"mode": layout.mode, "scale": layout.scale, "crop_size": layout.crop_size,
                    "stride": layout.stride}
    if config is not None:
        for key, value in (("mode", config.test_mode), ("scale", config.resize_scale),
                           ("crop_size", config.test_crop_size), ("stride", config.test_stride)):
            if value:
                settings[key] = value
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
    config = model.segnext_config
    if config is None:
        return label_space(int(model.num_classes), None)
    return label_space(int(model.num_classes), config.dataset, config.classes, config.palette)


def write_legend(space: LabelSpace, out: Path) -> Path:
    """``legend.json``: class index -> name and RGB colour, as the colour PNGs use them."""
    legend = {"source": space.source, "classes": [
        {"index": i, "name": name, "color": list(rgb)} for i, (name, rgb) in enumerate(zip(space.classes, space.palette))]}
    atomic_write_bytes(out / LEGEND_FILE, json.dumps(legend, indent=1).encode(), force=True)
    return out / LEGEND_FILE


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes and test-resizes one image file per item; runs in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], scale: Optional[tuple[int, int]]) -> None:
        self.paths, self.scale = list(paths), scale

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, Any]:
        try:
            rgb = load_image(self.paths[index])
        except BadInputError as err:  # travels as text: a worker's exception would carry a traceback
            return index, None, str(err)
        return index, rgb, resize_for_test(rgb, self.scale)


def iter_predictions(
    model: Any,
    paths: Sequence[Path],
    settings: dict[str, Any],
    *,
    seed: Optional[int] = 0,
    batch_size: int = 1,
    workers: int = 0,
) -> Iterator[tuple[Path, np.ndarray, Any]]:
    """(path, RGB image, Prediction) for each file, in order; ``settings`` are predict()'s keywords.

    ``workers`` DataLoader processes decode and resize; ``batch_size`` same-size images
    share a forward. ``seed``: every image draws from a generator seeded with ``seed``
    (None: the global RNG, image after image); either way the masks equal batch size 1's.
    """
    if batch_size < 1 or workers < 0:
        raise BadInputError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    settings = dict(settings)
    scale = settings.pop("scale", (2048, 512))  # predict()'s default resize
    try:  # before any image is decoded: a 1-pixel stride never ends, a 10^5 scale asks for 240 GB
        check_sizes(scale=scale, **({k: settings.get(k) for k in ("crop_size", "stride")}
                                    if settings.get("mode") == "slide" else {}))
    except ValueError as err:
        raise BadInputError(str(err)) from None
    loader = torch.utils.data.DataLoader(_ImageFiles(paths, scale), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        for _, _, resized in batch:
            if isinstance(resized, str):
                raise BadInputError(resized)
        gens = [None if seed is None else torch.Generator().manual_seed(seed) for _ in batch]
        preds = model.predict_resized([resized for _, _, resized in batch], generator=gens,
                                      batch_size=batch_size, **settings)
        for (index, rgb, _), pred in zip(batch, preds):
            yield paths[index], rgb, pred


def predict_files(
    model: Any,
    images: Sequence[Union[str, os.PathLike]],
    out_dir: Union[str, os.PathLike],
    *,
    mode: Optional[str] = None,
    seed: Optional[int] = 0,
    progress: Optional[bool] = None,
    batch_size: int = 1,
    workers: int = 0,
) -> list[dict[str, Path]]:
    """Predict each image and write ``<stem>_classes.png``, ``_color.png``, ``_overlay.png``,
    and one ``legend.json`` naming each class index and its colour.

    ``seed``: every image draws its bases from a generator seeded with ``seed`` (what
    ``torch.manual_seed(seed)`` before it would give), so a result does not depend on
    which images came before it. ``batch_size``/``workers``: see :func:`iter_predictions`.
    """
    if not hasattr(model, "predict_resized"):
        raise BadInputError("predict needs a segmentor; this artifact is a backbone only")
    paths = [Path(p) for p in images]
    for path in paths:
        if not path.is_file():
            raise BadInputError(f"image {path} does not exist")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = model_label_space(model)
    palette = space.palette_array()
    write_legend(space, out)
    stems = [p.stem for p in paths]
    written = []
    with progress_bar(len(paths), "predict", progress if len(paths) > 1 else False, unit="img") as bar:
        for path, rgb, pred in iter_predictions(model, paths, test_settings(model, mode), seed=seed,
                                                batch_size=batch_size, workers=workers):
            stem = path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}_{path.stem}"
            written.append(save_outputs(rgb, pred.mask.numpy(), palette, out, stem))
            bar.update(1)
    return written
