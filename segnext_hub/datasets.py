"""Class names and colour palettes of the SegNeXt training datasets.

The facts live in ``data/datasets.yaml`` (copied from MMSegmentation's dataset classes) so
that they can be read and diffed without running code; this module only looks them up.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Optional

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
        """(num_classes, 3) uint8, the form :func:`segnext_hub.visualize.colorize` takes."""
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
