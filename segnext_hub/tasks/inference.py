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
from ..images import MAX_PIXELS, check_header
from ..models.predict import check_sizes
from ..models.preprocessing import resize_for_test
from ..progress import progress_bar
from .evaluate import DATASET_LAYOUTS, load_image
from .visualize import save_outputs


def test_settings(model: Any, mode: Optional[str] = None) -> dict[str, Any]:
    """predict() keyword arguments from the model's config (test mode, resize, crop, stride)."""
    config = getattr(model, "segnext_config", None)  # any model with predict() is evaluated
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
    config = getattr(model, "segnext_config", None)  # any model with predict() is evaluated
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

    def __init__(self, paths: Sequence[Path], scale: Optional[tuple[int, int]], max_pixels: Optional[int]) -> None:
        self.paths, self.scale, self.max_pixels = list(paths), scale, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, Any]:
        try:
            rgb = load_image(self.paths[index], self.max_pixels)
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
    max_pixels: Optional[int] = MAX_PIXELS,
    skipped: Optional[list[tuple[Path, str]]] = None,
) -> Iterator[tuple[Path, np.ndarray, Any]]:
    """(path, RGB image, Prediction) for each file, in order; ``settings`` are predict()'s keywords.

    ``workers`` DataLoader processes decode and resize; ``batch_size`` same-size images
    share a forward. ``seed``: every image draws from a generator seeded with ``seed``
    (None: the global RNG, image after image); either way the masks equal batch size 1's.
    ``max_pixels``: see :func:`segnext_hub.images.read_rgb`. ``skipped``: when a list, an
    image that cannot be read is appended as (path, reason) and skipped; else it raises
    BadInputError.
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
    loader = torch.utils.data.DataLoader(_ImageFiles(paths, scale, max_pixels), batch_size=batch_size,
                                         num_workers=workers, collate_fn=list,
                                         generator=torch.Generator().manual_seed(0))
    for batch in loader:
        for index, _, resized in batch:
            if isinstance(resized, str):
                if skipped is None:
                    raise BadInputError(resized)
                skipped.append((paths[index], resized))
        batch = [item for item in batch if not isinstance(item[2], str)]
        if not batch:
            continue
        gens = [None if seed is None else torch.Generator().manual_seed(seed) for _ in batch]
        preds = model.predict_resized([resized for _, _, resized in batch], generator=gens,
                                      batch_size=batch_size, **settings)
        for (index, rgb, _), pred in zip(batch, preds):
            yield paths[index], rgb, pred


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct output stem per input, so no image's outputs overwrite another's.

    The file's stem when no other input shares it (case-insensitively: output folders may
    be on a case-insensitive disk); else the stem plus the extension (``twin_jpg``,
    ``twin_png``); else the path relative to the inputs' common folder, joined with ``_``;
    a counter settles what still clashes. Distinct stems give distinct files, since the
    three kinds' suffixes (``_classes``, ``_color``, ``_overlay``) end differently.
    """
    resolved = [Path(os.path.abspath(p)) for p in paths]
    common = Path(os.path.commonpath([str(p.parent) for p in resolved])) if resolved else Path()

    def level(path: Path, depth: int) -> str:
        if depth == 0:
            return path.stem
        with_ext = f"{path.stem}_{path.suffix.lstrip('.')}" if path.suffix else path.stem
        if depth == 1:
            return with_ext
        return "_".join([*path.parent.relative_to(common).parts, with_ext])

    stems = [p.stem for p in resolved]
    for index, path in enumerate(resolved):
        for depth in range(3):
            stems[index] = level(path, depth)
            others = [level(q, depth).casefold() for j, q in enumerate(resolved) if j != index]
            if stems[index].casefold() not in others:
                break
    taken: set[str] = set()
    for index, stem in enumerate(stems):
        unique, n = stem, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{stem}_{n}"
        taken.add(unique.casefold())
        stems[index] = unique
    return stems


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
    max_pixels: Optional[int] = MAX_PIXELS,
    skipped: Optional[list[tuple[Path, str]]] = None,
) -> list[dict[str, Path]]:
    """Predict each image file and write its class-index, colour and overlay PNGs.

    ``images`` may name folders: every image under one is predicted, its outputs in the
    same relative subfolders of ``out_dir`` (:func:`expand_images`). Every input gets
    outputs of its own (:func:`output_stems`: ``twin.jpg`` and ``twin.png``
    give ``twin_jpg_*`` and ``twin_png_*``). Every header is checked before the first
    forward, so a bad file or one over the pixel limit stops the run before anything is
    written; an image that fails later leaves no file of its own. ``out_dir`` is created
    with the first outputs, ``legend.json`` written beside them, and a folder this call
    created is removed again when the run fails before writing an image.

    Args:
        model: a segmentor from :func:`segnext_hub.load`.
        images: image files and folders.
        out_dir: the output folder (created if needed).
        mode: whole | slide (default: the weights' test mode).
        seed: every image draws its bases from a generator seeded with ``seed`` (what
            ``torch.manual_seed(seed)`` before it would give), so a result does not depend
            on which images came before it.
        progress: show a progress bar (None: on a terminal, for more than one image).
        batch_size: same-size images per forward (see :func:`iter_predictions`).
        workers: DataLoader processes that decode and resize.
        max_pixels: refuse images larger than this (None: no limit); the default is
            :data:`segnext_hub.images.MAX_PIXELS` (50 MP).
        skipped: when a list, images that cannot be read are appended as (path, reason)
            and skipped (the CLI's ``--skip-bad``); else the first one raises.

    Returns:
        One dict of written paths (``classes``/``color``/``overlay``) per predicted image.

    Raises:
        BadInputError: a backbone-only model, a missing image, a folder without images, or
            (without ``skipped``) an
            unreadable one or one over the pixel limit.
    """
    if not hasattr(model, "predict_resized"):
        raise BadInputError("predict needs a segmentor; this artifact is a backbone only")
    out = Path(out_dir)
    found = expand_images(images, out)
    paths = [path for path, _ in found]
    subdirs = dict(found)
    stems: dict[Path, str] = {}
    for sub in dict.fromkeys(subdirs.values()):  # outputs are unique within each output folder
        group = [path for path in paths if subdirs[path] == sub]
        stems.update(zip(group, output_stems(group)))
    readable = _check_headers(paths, max_pixels, skipped)
    created = not out.exists()
    space = model_label_space(model)
    palette = space.palette_array()
    written: list[dict[str, Path]] = []
    try:
        with progress_bar(len(readable), "predict", progress if len(readable) > 1 else False, unit="img") as bar:
            for path, rgb, pred in iter_predictions(model, readable, test_settings(model, mode), seed=seed,
                                                    batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                                                    skipped=skipped):
                out.mkdir(parents=True, exist_ok=True)
                written.append(save_outputs(rgb, pred.mask.numpy(), palette, out / subdirs[path], stems[path]))
                if len(written) == 1:
                    write_legend(space, out)
                bar.update(1)
    except BaseException:
        if created and not written and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return written


def expand_images(images: Sequence[Union[str, os.PathLike]], out_dir: Union[str, os.PathLike, None] = None
                  ) -> list[tuple[Path, Path]]:
    """Image files and folders -> (image, output subfolder) pairs.

    A folder contributes every image under it, recursively (sorted; suffixes
    ``IMAGE_SUFFIXES``, case-insensitive), and its outputs mirror the relative paths:
    ``photos/a/b.jpg`` given as ``photos`` writes ``OUT/a/b_color.png``. A file given by
    itself writes into ``OUT``. Files under ``out_dir`` (an earlier run's outputs inside the
    input folder) are skipped.

    Args:
        images: files and folders, as given on the command line.
        out_dir: the output folder, whose contents are never inputs.

    Returns:
        One pair per image, in argument order, each folder's images sorted by path.

    Raises:
        BadInputError: a path that does not exist, or a folder without images.
    """
    from ..training.data import IMAGE_SUFFIXES

    skip = Path(out_dir).resolve() if out_dir is not None else None
    found: list[tuple[Path, Path]] = []
    for given in (Path(p) for p in images):
        if given.is_dir():
            inside = sorted((p for p in given.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                             and not (skip is not None and skip in p.resolve().parents)), key=str)
            if not inside:
                raise BadInputError(f"folder {given} holds no images ({' '.join(IMAGE_SUFFIXES)})")
            found.extend((p, p.parent.relative_to(given)) for p in inside)
        elif given.is_file():
            found.append((given, Path()))
        else:
            raise BadInputError(f"image {given} does not exist")
    return found


def _check_headers(paths: Sequence[Path], max_pixels: Optional[int],
                   skipped: Optional[list[tuple[Path, str]]]) -> list[Path]:
    """The paths whose header opens and is within the pixel limit; the others raise (or,
    with ``skipped``, are listed there). No pixel data is decoded."""
    readable = []
    for path in paths:
        try:
            check_header(path, max_pixels=max_pixels)
        except BadInputError as err:
            if skipped is None:
                raise
            skipped.append((path, str(err)))
        else:
            readable.append(path)
    return readable
