"""Class names and colour palettes of the SegNeXt training datasets.

The facts live in ``data/datasets.yaml`` (copied from MMSegmentation's dataset classes) so
that they can be read and diffed without running code; this module only looks them up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Optional, Sequence

import numpy as np
import yaml

from .errors import BadInputError

# Spellings users type (CLI, model-card "dataset" fields) -> canonical key in the data file.
ALIASES = {
    "ade20k": "ade20k", "ade": "ade20k", "ade-20k": "ade20k", "ade_20k": "ade20k",
    "adechallengedata2016": "ade20k",
    "cityscapes": "cityscapes", "city": "cityscapes",
    "coco_stuff164k": "coco_stuff164k", "coco-stuff164k": "coco_stuff164k",
    "coco-stuff": "coco_stuff164k", "coco_stuff": "coco_stuff164k", "cocostuff": "coco_stuff164k",
    "coco-stuff-164k": "coco_stuff164k",
    "isaid": "isaid",
}


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset's label space: ``classes[i]`` is drawn in ``palette[i]`` (RGB)."""

    name: str
    title: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    reduce_zero_label: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette_array(self) -> np.ndarray:
        """(num_classes, 3) uint8, the form :func:`segnext_hub.tasks.visualize.colorize` takes."""
        return np.asarray(self.palette, dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def _load() -> dict[str, DatasetInfo]:
    text = resources.files("segnext_hub").joinpath("data/datasets.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)["datasets"]
    infos = {}
    for name, entry in raw.items():
        classes = tuple(str(c) for c in entry["classes"])
        palette = tuple(tuple(int(v) for v in rgb) for rgb in entry["palette"])
        if len(classes) != len(palette) or len(classes) != entry["num_classes"]:
            raise RuntimeError(f"datasets.yaml: {name} has inconsistent class/palette counts")
        infos[name] = DatasetInfo(name, str(entry["title"]), classes, palette,  # type: ignore[arg-type]
                                  bool(entry["reduce_zero_label"]))
    return infos


def dataset_names() -> list[str]:
    """Canonical dataset keys, e.g. ``['ade20k', 'cityscapes', 'coco_stuff164k', 'isaid']``."""
    return list(_load())


def canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace(" ", "")
    if key in ALIASES:
        return ALIASES[key]
    raise BadInputError(f"unknown dataset {name!r}; expected one of {', '.join(dataset_names())}")


def get_dataset(name: str) -> DatasetInfo:
    """Look up a dataset by any accepted spelling ('ADE20K', 'coco-stuff', 'isaid', ...)."""
    return _load()[canonical_name(name)]


def get_classes(name: str) -> tuple[str, ...]:
    return get_dataset(name).classes


def get_palette(name: str) -> np.ndarray:
    return get_dataset(name).palette_array()


def guess_dataset(num_classes: int) -> Optional[DatasetInfo]:
    """The dataset whose label space has ``num_classes`` classes (they are all distinct)."""
    for info in _load().values():
        if info.num_classes == num_classes:
            return info
    return None


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """ADE20K's label shift (``DatasetInfo.reduce_zero_label``): 0 ("other") -> 255
    (ignored), k -> k-1, 255 stays ignored.

    Done in uint8 arithmetic exactly as MMSeg's ``LoadAnnotations``: 0 becomes 255, then
    everything moves down by one, then 254 (formerly 255 or 0) becomes 255 again.

    Args:
        label: A uint8 ADE20K label map (0 = "other", 1..150 the classes).

    Returns:
        A new uint8 map of class indices 0..149, 255 where ignored.

    Raises:
        ValueError: ``label`` is not uint8.
    """
    if label.dtype != np.uint8:
        raise ValueError(f"reduce_zero_label expects a uint8 label, got {label.dtype}")
    reduced = label.copy()
    reduced[reduced == 0] = 255
    reduced = reduced - np.uint8(1)
    reduced[reduced == 254] = 255
    return reduced


def random_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random palette for label spaces none of the known datasets has."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)


def palette_for(num_classes: int, dataset: Optional[str] = None) -> np.ndarray:
    """Palette for a model's output: the named dataset's, else one with the same class count.

    A named dataset whose class count differs from the model's is an error rather than a
    silently wrong legend.
    """
    if dataset is not None:
        info = get_dataset(dataset)
        if info.num_classes != num_classes:
            raise BadInputError(
                f"dataset {info.name} has {info.num_classes} classes but the model predicts {num_classes}"
            )
        return info.palette_array()
    info = guess_dataset(num_classes)
    return info.palette_array() if info is not None else random_palette(num_classes)


@dataclass(frozen=True)
class LabelSpace:
    """The names and colours a model's outputs are shown with, and where they came from."""

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    source: str

    def palette_array(self) -> np.ndarray:
        return np.asarray(self.palette, dtype=np.uint8)


def label_space(num_classes: int, dataset: Optional[str] = None, classes: Optional[Sequence[str]] = None,
                palette: Optional[Sequence[Sequence[int]]] = None) -> LabelSpace:
    """Names and colours for ``num_classes`` outputs: the artifact's own record first.

    A checkpoint trained on its own label space records it (``meta.dataset_meta`` or
    ``meta.CLASSES``/``PALETTE``); those win when their length matches the head. Then the
    named dataset's, then the dataset with that class count, then ``class_<i>`` with a
    fixed random palette. A recorded class list without a palette keeps the default colours.
    """
    info = get_dataset(dataset) if dataset and dataset.strip().lower() in ALIASES else guess_dataset(num_classes)
    if info is not None and info.num_classes != num_classes:
        info = None
    default_classes = info.classes if info else tuple(f"class_{i}" for i in range(num_classes))
    default_palette = info.palette if info else tuple(
        tuple(int(v) for v in rgb) for rgb in random_palette(num_classes))
    own_classes = tuple(classes) if classes is not None and len(classes) == num_classes else None
    own_palette = (tuple(tuple(int(v) for v in rgb) for rgb in palette)
                   if palette is not None and len(palette) == num_classes else None)
    source = "recorded by the artifact" if own_classes or own_palette else (
        f"dataset {info.name}" if info else "generic (class_<i>, random palette)")
    return LabelSpace(own_classes or default_classes, own_palette or default_palette,  # type: ignore[arg-type]
                      source)


def own_label_space(num_classes: Optional[int], dataset: Optional[str], classes: Optional[Sequence[str]],
                    palette: Optional[Sequence[Sequence[int]]]) -> tuple[Optional[list[str]], Optional[list[list[int]]]]:
    """The recorded classes and palette worth storing: None for each that only repeats the
    dataset default (or does not fit the head), so config files stay small."""
    if not num_classes:
        return None, None
    default = label_space(num_classes, dataset)
    own = label_space(num_classes, dataset, classes, palette)
    return (list(own.classes) if own.classes != default.classes else None,
            [list(c) for c in own.palette] if own.palette != default.palette else None)
