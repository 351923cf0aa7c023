"""MMSegmentation 1.2.2's SegNeXt training data pipeline, without OpenCV or mmcv.

The ADE20K 512x512 recipe of every SegNeXt config, step by step:

1. ``LoadAnnotations(reduce_zero_label=True)``: label 0 ("other") becomes 255 (ignored),
   every other label moves down by one (:func:`reduce_zero_label`).
2. ``RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)``: both bounds
   times one random ratio, then the largest size within (long, short) edge bounds
   (``keep_ratio_size``); the image bilinearly with OpenCV's fixed-point arithmetic
   (``resize_like_opencv``, the same pixels as MMSeg's ``cv2.resize``), the label nearest.
3. ``RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75)``: a random window; up to ten
   redraws while the window holds fewer than two non-ignored classes or one class covers
   75% of its labelled pixels. An image smaller than the crop keeps its size here.
4. ``RandomFlip(prob=0.5)``: horizontal, image and label together.
5. The data preprocessor: normalise with the ImageNet mean and std (RGB), *then* pad bottom
   and right to 512x512 with 0 (so padding is 0 in normalised space) and the label with 255.

``PhotoMetricDistortion`` (random brightness, contrast, saturation and hue jitter) is left
out: it goes through OpenCV's HSV conversion, which this package does not reproduce.

Randomness comes from a ``numpy.random.Generator`` per sample, seeded from (seed, draw
number), so a DataLoader gives the same samples with any number of workers and a resumed
run continues the same stream (:class:`InfiniteSampler`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..datasets import get_dataset, reduce_zero_label
from ..errors import BadInputError
from ..images import MAX_PIXELS, check_size, read_rgb
from ..models.loss import IGNORE_INDEX
from ..models.preprocessing import keep_ratio_size, normalise, resize_like_opencv

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIX = ".png"  # MMSeg's seg_map_suffix for ADE20K and custom datasets

ClassList = Union[str, Path, Sequence[str]]
SampleKey = Union[int, tuple[int, int]]
# Two independent random streams from one seed: each sample's augmentation, each epoch's order.
_SAMPLE_STREAM, _ORDER_STREAM = 0, 1


def _nearest_sources(dst: int, src: int) -> np.ndarray:
    """OpenCV's INTER_NEAREST source indices: floor(x * (1 / (dst / src))), clamped."""
    step = 1.0 / (dst / src)
    return np.minimum(np.floor(np.arange(dst) * step).astype(np.int64), src - 1)


def resize_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label, the same pixels as ``cv2.resize``."""
    rows = _nearest_sources(height, label.shape[0])
    cols = _nearest_sources(width, label.shape[1])
    return label[rows[:, None], cols[None, :]]


def crop_is_varied(label: np.ndarray, cat_max_ratio: float, ignore_index: int = IGNORE_INDEX) -> bool:
    """MMSeg's RandomCrop test: two or more labelled classes, none over ``cat_max_ratio``."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    present = counts[counts > 0]
    return len(present) > 1 and present.max() / present.sum() < cat_max_ratio


class TrainTransform:
    """One training sample from a decoded image and label: MMSeg's SegNeXt ADE20K pipeline.

    Call with an (H, W, 3) uint8 RGB image, an (H, W) uint8 label (already zero-reduced
    where the dataset wants it) and a ``numpy.random.Generator``. Returns the normalised
    (3, crop, crop) float32 image and the (crop, crop) int64 label that ``model.loss`` takes.
    Random draws, in MMSeg's order: the resize ratio, crop offsets (row then column, up to
    eleven windows), the flip.
    """

    def __init__(self, crop_size: int = 512, scale: tuple[int, int] = (2048, 512),
                 ratio_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float = 0.75,
                 flip_prob: float = 0.5) -> None:
        if not ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be (low, high), got {ratio_range}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob}")
        self.crop_size = (int(crop_size), int(crop_size))
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.flip_prob = float(flip_prob)

    def random_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        """RandomResize's target: both bounds times one ratio drawn from ``ratio_range``."""
        low, high = self.ratio_range
        ratio = rng.random() * (high - low) + low
        return int(self.scale[0] * ratio), int(self.scale[1] * ratio)

    def random_window(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        """A (top, bottom, left, right) crop, clipped to the image when it is smaller."""
        crop_h, crop_w = self.crop_size
        top = int(rng.integers(0, max(height - crop_h, 0) + 1))
        left = int(rng.integers(0, max(width - crop_w, 0) + 1))
        return top, min(top + crop_h, height), left, min(left + crop_w, width)

    def crop_window(self, label: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """RandomCrop's choice: redraw up to ten times while the window is too uniform.

        The eleventh window, drawn after the tenth failed test, is kept untested (as MMSeg).
        """
        height, width = label.shape
        window = self.random_window(rng, height, width)
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                top, bottom, left, right = window
                if crop_is_varied(label[top:bottom, left:right], self.cat_max_ratio):
                    break
                window = self.random_window(rng, height, width)
        return window

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInputError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
        if label.shape != image.shape[:2] or label.dtype != np.uint8:
            raise BadInputError(f"expected a {image.shape[:2]} uint8 label, got {label.dtype} {label.shape}")
        height, width = label.shape
        new_h, new_w = keep_ratio_size(height, width, self.random_scale(rng))
        if (new_h, new_w) != (height, width):
            label = resize_nearest(label, new_h, new_w)
        window = self.crop_window(label, rng)
        top, bottom, left, right = window
        label = label[top:bottom, left:right]
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if (new_h, new_w) == (height, width):
            pixels = chw[:, top:bottom, left:right].float()
        else:  # only the window is computed: the same pixels as resizing, then cropping
            pixels = resize_like_opencv(chw, new_h, new_w, window=window)
        if rng.random() < self.flip_prob:
            pixels, label = pixels.flip(-1), label[:, ::-1]
        target = torch.from_numpy(np.ascontiguousarray(label)).long()
        pad_h, pad_w = self.crop_size[0] - target.shape[0], self.crop_size[1] - target.shape[1]
        padding = (0, pad_w, 0, pad_h)  # left, right, top, bottom
        return F.pad(normalise(pixels), padding, value=0.0), F.pad(target, padding, value=IGNORE_INDEX)


def read_class_list(classes: ClassList) -> list[str]:
    """Class names from a list or a text file with one name per line (blank lines skipped)."""
    if isinstance(classes, (str, Path)):
        path = Path(classes)
        if not path.is_file():
            raise BadInputError(f"class list {path} does not exist (expected a text file, one class per line)")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        where = str(path)
    else:
        names, where = [str(name) for name in classes], "the class list"
    if not names:
        raise BadInputError(f"{where} names no classes")
    if len(names) > IGNORE_INDEX:
        raise BadInputError(f"{where} names {len(names)} classes; labels are uint8 with 255 = ignore, "
                            f"so at most {IGNORE_INDEX} classes fit")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInputError(f"{where} names {duplicates[0]!r} more than once")
    return names


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB decoded as MMSeg's ``cv2`` read does (:func:`segnext_hub.images.read_rgb`)."""
    return read_rgb(path)


def read_label(path: Path) -> np.ndarray:
    """(H, W) uint8 class indices from a single-channel PNG (palette, grey or 16-bit)."""
    try:
        with Image.open(path) as img:
            check_size(path, img.width, img.height, MAX_PIXELS)
            label = np.array(img)
    except OSError as err:
        raise BadInputError(f"cannot read label {path}: {err}") from None
    if label.ndim != 2:
        raise BadInputError(f"label {path} has shape {label.shape}; expected a single-channel PNG of class indices")
    if label.dtype != np.uint8:
        if label.size and int(label.max()) > 255:
            raise BadInputError(f"label {path} holds value {int(label.max())}; class indices must be below 256")
        label = label.astype(np.uint8)
    return label


class SegmentationFolder(Dataset):
    """Image/label pairs in a folder, yielding training samples through :class:`TrainTransform`.

    Two layouts:

    * ADE20K's: ``root/images/<split>/*.jpg`` and ``root/annotations/<split>/*.png``; the
      classes default to ADE20K's 150 and ``reduce_zero_label`` to True.
    * Any other: ``root/images/`` and ``root/labels/`` with matching stems (subfolders
      allowed), labels as PNG class indices, 255 ignored; ``classes`` is required.

    An item is keyed by an image index (its samples then always use the same random draws)
    or by an ``(index, draw)`` pair from :class:`InfiniteSampler` (fresh draws every time).
    """

    def __init__(self, root: Union[str, Path], classes: Optional[ClassList] = None, *, split: str = "training",
                 transform: Optional[TrainTransform] = None, seed: int = 0,
                 reduce_zero_label: Optional[bool] = None) -> None:
        root = Path(root)
        palette = None
        if (root / "annotations" / split).is_dir():
            images_dir, labels_dir = root / "images" / split, root / "annotations" / split
            if classes is None:
                ade = get_dataset("ade20k")
                classes, palette = list(ade.classes), [list(rgb) for rgb in ade.palette]
            reduce = True if reduce_zero_label is None else reduce_zero_label
        elif (root / "labels").is_dir():
            images_dir, labels_dir = root / "images", root / "labels"
            if classes is None:
                raise BadInputError(f"{root} holds a custom dataset: give its classes (a text file, one per line)")
            reduce = bool(reduce_zero_label)
        else:
            raise BadInputError(f"{root} has neither images/ + labels/ folders nor ADE20K's "
                                f"images/{split}/ + annotations/{split}/")
        self.classes = read_class_list(classes)
        self.palette: Optional[list[list[int]]] = palette
        self.reduce_zero_label = reduce
        self.transform = transform if transform is not None else TrainTransform()
        self.seed = int(seed)
        self.images, self.labels = self._pair(images_dir, labels_dir)

    @staticmethod
    def _pair(images_dir: Path, labels_dir: Path) -> tuple[list[Path], list[Path]]:
        images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
            if images_dir.is_dir() else []
        if not images:
            raise BadInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
        labels = [labels_dir / image.relative_to(images_dir).with_suffix(LABEL_SUFFIX) for image in images]
        missing = [(image, label) for image, label in zip(images, labels) if not label.is_file()]
        if missing:
            image, label = missing[0]
            raise BadInputError(f"{len(missing)} of {len(images)} images have no label, "
                                f"e.g. {image} (expected {label})")
        return images, labels

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded image and its label (zero-reduced if the dataset says so), checked."""
        image, label = read_image(self.images[index]), read_label(self.labels[index])
        if label.shape != image.shape[:2]:
            raise BadInputError(f"label {self.labels[index]} is {label.shape[1]}x{label.shape[0]} but its image "
                                f"{self.images[index]} is {image.shape[1]}x{image.shape[0]}")
        if self.reduce_zero_label:
            label = reduce_zero_label(label)
        wrong = label[(label >= self.num_classes) & (label != IGNORE_INDEX)]
        if wrong.size:
            value = int(wrong[0]) + (1 if self.reduce_zero_label else 0)
            valid = f"1..{self.num_classes} (0 is ignored)" if self.reduce_zero_label else f"0..{self.num_classes - 1}"
            raise BadInputError(f"label {self.labels[index]} holds value {value}; expected {valid} or 255 (ignored)")
        return image, label

    def __getitem__(self, key: SampleKey) -> tuple[Tensor, Tensor]:
        index, draw = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, int(draw)])
        image, label = self.read(int(index))
        return self.transform(image, label, rng)


class InfiniteSampler(Sampler):
    """Endless shuffled passes over a dataset, as MMEngine's InfiniteSampler, keyed for resuming.

    Yields ``(image index, draw number)``; draw ``n`` is the n-th sample of the run, so a run
    resumed at iteration ``i`` with (total) batch size ``b`` passes ``start=i * b`` and sees the
    same images with the same augmentation as an uninterrupted one.

    Across processes (``world_size`` ranks, each taking ``chunk`` samples per micro-batch), the
    run's draws are dealt out in order: micro-step ``m`` gives rank ``r`` the draws
    ``start + m * world_size * chunk + r * chunk + j`` for ``j < chunk``. So one seed gives each
    rank its own samples, together the same samples, in the same order, as one process taking
    ``world_size * chunk`` per micro-batch (and with ``world_size=1`` exactly the plain stream).
    """

    def __init__(self, size: int, seed: int = 0, start: int = 0, *, rank: int = 0, world_size: int = 1,
                 chunk: int = 1) -> None:
        if not 0 <= rank < world_size or chunk < 1:
            raise ValueError(f"need 0 <= rank < world_size and chunk >= 1, got {rank}, {world_size}, {chunk}")
        self.size, self.seed, self.start = int(size), int(seed), int(start)
        self.rank, self.world_size, self.chunk = int(rank), int(world_size), int(chunk)

    def draws(self) -> Iterator[int]:
        """This rank's draw numbers, in order."""
        step, first = self.world_size * self.chunk, self.start + self.rank * self.chunk
        while True:
            yield from range(first, first + self.chunk)
            first += step

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = -1, np.empty(0, dtype=np.int64)
        for draw in self.draws():
            if draw // self.size != epoch:
                epoch = draw // self.size
                order = np.random.default_rng([self.seed, _ORDER_STREAM, epoch]).permutation(self.size)
            yield int(order[draw % self.size]), draw
