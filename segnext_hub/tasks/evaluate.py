"""mIoU / aAcc / mAcc on an ADE20K- or Cityscapes-layout folder, computed as MMSeg 1.x does.

The folder is walked the way MMSeg's dataset classes walk it (sorted image paths, labels
decoded and, for ADE20K, zero-reduced as its ``LoadAnnotations`` does); the metric is
:class:`segnext_hub.tasks.metrics.IoUAccumulator`, a step-by-step twin of MMSeg's ``IoUMetric``.

Seeds: the NMF head draws random bases at every forward. With ``rng="image"`` (the
default) image ``i``'s bases come from a generator seeded with ``image_seed(seed, i)``
(``i`` = its place in the sorted list), so a prediction depends neither on the images
before it, nor on ``limit``, the batch size, or how many processes share the work.
``rng="sequential"`` is MMSeg's ``tools/test.py`` on one process: ``torch.manual_seed(seed)``
once, then the global RNG runs on image after image (one process only).

Distributed: inside an initialised process group each rank evaluates a contiguous block
of the images; every image's areas are summed over ranks and added in dataset order, so
the metrics equal one process's bit for bit (see :mod:`segnext_hub.tasks.distributed`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..datasets import get_dataset, label_space
from ..datasets import reduce_zero_label as shift_zero_label
from ..errors import BadInputError
from ..images import MAX_PIXELS, check_size, read_rgb
from ..models.predict import MAX_SIDE, MIN_SIDE, MIN_STRIDE
from ..models.preprocessing import ResizedImage, resize_for_test
from ..progress import progress_bar
from ..training.data import IMAGE_SUFFIXES, LABEL_SUFFIX
from .distributed import all_sum, current_world, raise_if_any_failed, shard
from .metrics import IGNORE_INDEX, IoUAccumulator, two_places
from .seeds import recorded_seed
from .tta import REFERENCES, TTA_RATIOS, predict_tta

PathLike = Union[str, "os.PathLike[str]"]
RNG_MODES = ("image", "sequential")
FOLDER = "folder"  # images/ + labels/, classes from the model


# --------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Layout:
    """Where one dataset keeps its validation images and labels, and how it is tested."""

    name: str
    root_name: str  # the folder the layout usually sits in, for "parent" lookups
    image_dir: str
    label_dir: str
    image_suffix: str
    label_suffix: str
    reduce_zero_label: bool
    # MMSeg / official-repo test settings: keep-ratio scale, then whole or slide inference.
    mode: str
    scale: tuple[int, int]
    crop_size: tuple[int, int]
    stride: tuple[int, int]


DATASET_LAYOUTS: dict[str, Layout] = {
    # configs/_base_/datasets/ade20k.py + segnext configs (test_cfg mode='whole').
    "ade20k": Layout("ade20k", "ADEChallengeData2016", "images/validation", "annotations/validation",
                     ".jpg", ".png", True, "whole", (2048, 512), (512, 512), (341, 341)),
    # configs/_base_/datasets/cityscapes.py; official SegNeXt Cityscapes configs slide
    # 1024x1024 crops every 768 pixels.
    "cityscapes": Layout("cityscapes", "cityscapes", "leftImg8bit/val", "gtFine/val",
                         "_leftImg8bit.png", "_gtFine_labelTrainIds.png", False, "slide",
                         (2048, 1024), (1024, 1024), (768, 768)),
    # The layout fine-tuning reads (training.data.SegmentationFolder): images/ + labels/ with
    # matching stems, any image suffix, PNG class indices (255 ignored), the model's classes.
    FOLDER: Layout(FOLDER, "", "images", "labels", "", LABEL_SUFFIX, False, "whole",
                   (2048, 512), (512, 512), (341, 341)),
}


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


def _has_layout(root: Path, layout: Layout) -> bool:
    return (root / layout.image_dir).is_dir() and (root / layout.label_dir).is_dir()


def find_dataset(data_dir: PathLike, dataset: Optional[str] = None) -> tuple[Layout, Path]:
    """The layout and root folder of ``data_dir`` (a dataset root or the folder above it)."""
    base = Path(data_dir)
    if not base.is_dir():
        raise BadInputError(f"data directory {base} does not exist")
    if dataset == FOLDER:
        candidates = [DATASET_LAYOUTS[FOLDER]]
    elif dataset is not None:
        key = get_dataset(dataset).name
        if key not in DATASET_LAYOUTS:
            raise BadInputError(f"evaluation supports the {' and '.join(DATASET_LAYOUTS)} layouts, not {key}")
        candidates = [DATASET_LAYOUTS[key]]
    else:
        candidates = list(DATASET_LAYOUTS.values())
    found = []
    for layout in candidates:
        roots = [base] + sorted(p for p in base.iterdir() if p.is_dir())
        matches = [r for r in roots if _has_layout(r, layout)]
        if len(matches) > 1 and matches[0] != base:
            preferred = [r for r in matches if r.name == layout.root_name]
            if len(preferred) != 1:
                names = ", ".join(str(m) for m in matches)
                raise BadInputError(f"several {layout.name} datasets under {base} ({names}); pass one of them")
            matches = preferred
        if matches:
            found.append((layout, matches[0]))
    if not found:
        wanted = "; ".join(f"{lay.name}: {lay.image_dir}/ + {lay.label_dir}/" for lay in candidates)
        raise BadInputError(f"no dataset layout found in {base} or its subfolders (expected {wanted})")
    if len(found) > 1:
        raise BadInputError(f"{base} holds both an ADE20K and a Cityscapes layout; pass the dataset name")
    return found[0]


def list_samples(layout: Layout, root: Path) -> list[Sample]:
    """Every image with its label, sorted by image path as MMSeg sorts its data list.

    A missing label is an error before any inference starts, not a crash hours in.
    """
    image_dir, label_dir = root / layout.image_dir, root / layout.label_dir
    # By path string, as MMSeg sorts (Path order differs when a name contains "-" or ".").
    suffixes = (layout.image_suffix,) if layout.image_suffix else IMAGE_SUFFIXES
    lowered = tuple(x.lower() for x in suffixes)
    images = sorted((p for p in image_dir.rglob("*") if p.name.lower().endswith(lowered) and p.is_file()), key=str)
    if not images:
        raise BadInputError(f"no {' '.join('*' + x for x in suffixes)} images under {image_dir}")
    samples, missing = [], []
    for image in images:
        rel = image.relative_to(image_dir)
        stem = rel.name[: -len(layout.image_suffix)] if layout.image_suffix else rel.stem
        label = label_dir / rel.parent / f"{stem}{layout.label_suffix}"
        (samples if label.is_file() else missing).append(Sample(image, label))
    if missing:
        first = missing[0]
        hint = ""
        if layout.name == "cityscapes":
            hint = (" (labelTrainIds are made from gtFine *_labelIds.png by cityscapesscripts' "
                    "createTrainIdLabelImgs or MMSeg's tools/dataset_converters/cityscapes.py)")
        raise BadInputError(f"{len(missing)} image(s) have no label, e.g. {first.image} has no "
                            f"{first.label}{hint}")
    return samples


def load_image(path: Path, max_pixels: Optional[int] = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) decoded as MMSeg's ``LoadImageFromFile`` (OpenCV) does: see
    :func:`segnext_hub.images.read_rgb` (EXIF orientation, 16-bit, CMYK, pixel limit)."""
    return read_rgb(path, max_pixels=max_pixels)


def load_label(path: Path, reduce_zero_label: bool) -> np.ndarray:
    """uint8 (H, W) class ids with 255 = ignore, as MMSeg's LoadAnnotations produces them.

    MMSeg casts the decoded PNG to uint8 and, for ADE20K, maps 0 ("other") to 255 and
    every other id i to i - 1.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            check_size(path, img.width, img.height, MAX_PIXELS)
            label = np.array(img)
    except (OSError, ValueError) as err:
        if isinstance(err, BadInputError):
            raise
        raise BadInputError(f"cannot read label {path}: {err}") from None
    label = label.squeeze()
    if label.ndim != 2:
        raise BadInputError(f"label {path} is not a single-channel class-id image (shape {label.shape})")
    label = label.astype(np.uint8)
    return shift_zero_label(label) if reduce_zero_label else label


# --------------------------------------------------------------------------- result
def _json_float(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else round(float(value), 2)


@dataclass
class EvalResult:
    """Metrics in percent (MMSeg's rounding); per-class values are NaN where undefined."""

    dataset: str
    data_root: str
    num_images: int
    aAcc: float
    mIoU: float
    mAcc: float
    classes: list[str]
    iou: list[float]
    acc: list[float]
    areas: dict[str, list[int]]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes null."""
        out = asdict(self)
        for key in ("aAcc", "mIoU", "mAcc"):
            out[key] = _json_float(getattr(self, key))
        out["iou"] = [_json_float(v) for v in self.iou]
        out["acc"] = [_json_float(v) for v in self.acc]
        out["per_class"] = [
            {"class": name, "IoU": _json_float(i), "Acc": _json_float(a)}
            for name, i, a in zip(self.classes, self.iou, self.acc)
        ]
        return out

    def format_table(self) -> str:
        """The per-class table MMSeg logs, plus the summary line."""
        width = max(len("Class"), *(len(c) for c in self.classes))
        lines = [f"{'Class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
        for name, i, a in zip(self.classes, self.iou, self.acc):
            lines.append(f"{name:<{width}}  {_fmt(i):>6}  {_fmt(a):>6}")
        lines.append("-" * (width + 16))
        lines.append(f"aAcc {_fmt(self.aAcc)}  mIoU {_fmt(self.mIoU)}  mAcc {_fmt(self.mAcc)}  "
                     f"({self.num_images} images, {self.dataset})")
        return "\n".join(lines)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"


# --------------------------------------------------------------------------- driver
def _pair(value: Optional[Sequence[int]], default: tuple[int, int], what: str) -> tuple[int, int]:
    if value is None:
        return default
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise BadInputError(f"{what} must be two integers, got {value!r}") from None
    low = MIN_STRIDE if what == "stride" else MIN_SIDE
    if not (low <= a <= MAX_SIDE and low <= b <= MAX_SIDE):
        raise BadInputError(f"{what} must be two integers in {low}..{MAX_SIDE} (pixels), got {value!r}")
    return a, b


def iter_samples(data_dir: PathLike, dataset: Optional[str] = None,
                 limit: Optional[int] = None) -> tuple[Layout, Path, list[Sample]]:
    """Resolve the layout and list the samples (the first ``limit`` in sorted order)."""
    layout, root = find_dataset(data_dir, dataset)
    samples = list_samples(layout, root)
    if limit is not None:
        if limit < 1:
            raise BadInputError(f"limit must be a positive integer, got {limit}")
        samples = samples[:limit]
    return layout, root, samples


def _class_names(model: Any, dataset: Optional[str]) -> tuple[str, ...]:
    """The names the model's own record gives its classes (a relabelled label space), else
    the dataset's."""
    config = getattr(model, "segnext_config", None)  # any model with predict() is evaluated
    return label_space(int(model.num_classes), dataset if dataset else (config.dataset if config else None),
                       config.classes if config else None).classes


def image_seed(seed: int, index: int) -> int:
    """The NMF seed of image ``index`` in a run seeded with ``seed`` (numpy's SeedSequence mixing).

    A pure function of the two numbers, so any process can compute any image's seed.

    Args:
        seed: The run's seed.
        index: The image's position in the sorted dataset.

    Returns:
        A seed for ``torch.Generator().manual_seed``, below 2**63.
    """
    words = np.random.SeedSequence([int(seed) % 2**64, int(index)]).generate_state(2, np.uint32)
    return (int(words[0]) << 31 | int(words[1]) >> 1) & (2**63 - 1)


@dataclass
class _Item:
    """What a loader worker hands over for one image (an error travels as text, not as an exception)."""

    index: int
    label: Optional[np.ndarray] = None
    image: Optional[np.ndarray] = None  # raw RGB, when the model resizes itself (TTA, plain predict)
    resized: Optional[ResizedImage] = None
    error: Optional[str] = None


class _EvalImages(torch.utils.data.Dataset):
    """Decodes (and, with ``scale``, resizes) this rank's images; runs in DataLoader workers."""

    def __init__(self, samples: Sequence[Sample], indices: Sequence[int], reduce_zero_label: bool,
                 scale: Optional[tuple[int, int]], resize: bool) -> None:
        self.samples, self.indices = samples, list(indices)
        self.reduce_zero_label, self.scale, self.resize = reduce_zero_label, scale, resize

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> _Item:
        index = self.indices[position]
        sample = self.samples[index]
        try:
            image = load_image(sample.image)
            label = load_label(sample.label, self.reduce_zero_label)
            if image.shape[:2] != label.shape:
                raise BadInputError(f"{sample.image} is {image.shape[:2]} but its label is {label.shape}")
        except BadInputError as err:
            return _Item(index, error=str(err))
        if self.resize:
            return _Item(index, label, resized=resize_for_test(image, self.scale))
        return _Item(index, label, image=image)


def evaluate(
    model: Any,
    data_dir: PathLike,
    *,
    dataset: Optional[str] = None,
    mode: Optional[str] = None,
    scale: Optional[Sequence[int]] = None,
    crop_size: Optional[Sequence[int]] = None,
    stride: Optional[Sequence[int]] = None,
    aug_test: bool = False,
    aug_ratios: Sequence[float] = TTA_RATIOS,
    aug_reference: str = "image",
    seed: Optional[int] = None,
    rng: str = "image",
    limit: Optional[int] = None,
    progress: Optional[bool] = None,
    batch_size: int = 1,
    workers: int = 0,
) -> EvalResult:
    """mIoU, aAcc and mAcc of ``model`` on a dataset folder, as MMSeg 1.x computes them.

    MMSeg's test settings and ``IoUMetric``, so a published figure can be checked. In a
    process group (``torch.distributed``) every rank must call this; each evaluates its
    share and all return the same result, equal to one process's bit for bit.

    Args:
        model: A ``SegNeXt`` (or anything with its ``predict``).
        data_dir: An ADE20K or Cityscapes layout, an ``images/ + labels/`` folder (the
            layout fine-tuning reads: PNG class indices below the model's class count, 255
            ignored, the model's own classes), or a parent folder of one.
        dataset: The layout's name (``"folder"`` for ``images/ + labels/``); None picks the
            one found in ``data_dir``.
        mode: ``"whole"`` or ``"slide"``; None: the dataset's (ADE20K whole, Cityscapes slide).
        scale: Keep-ratio resize bounds; None: the dataset's ((2048, 512) / (2048, 1024)).
        crop_size: Slide tile; None: the dataset's (Cityscapes 1024x1024).
        stride: Slide step; None: the dataset's (Cityscapes 768).
        aug_test: Multi-scale + flip (``segnext_hub.tasks.tta.predict_tta``), the "ms+flip"
            protocol.
        aug_ratios: The multi-scale ratios.
        aug_reference: What the ratios multiply (``"image"``: the image size).
        seed: The NMF seed; None is the training seed the artifact records
            (``segnext_hub.tasks.seeds.recorded_seed``), else 0 in ``rng="image"`` (in
            ``"sequential"`` it leaves the global RNG alone).
        rng: ``"image"``: image i draws from a generator seeded with ``image_seed(seed, i)``,
            so results do not depend on processes, batches or ``limit``; ``"sequential"``:
            MMSeg's ``tools/test.py`` order (one process only).
        limit: Evaluate the first ``limit`` images (sorted order) only.
        progress: Show a bar; None shows one on a terminal only (rank 0, counting all ranks).
        batch_size: Images (or one image's slide windows) of one size that share a forward;
            each image's bases are drawn as if alone (TTA views run one at a time).
        workers: DataLoader processes that decode and resize.

    Returns:
        An ``EvalResult``: the metrics, per-class IoU and accuracy, and the ``settings``
        that ran (which seed, and where it came from).

    Raises:
        BadInputError: No known layout in ``data_dir``, an unreadable image or label, a model
            whose class count differs from the dataset's, a bad option.
    """
    for given, what in ((scale, "scale"), (crop_size, "crop size"), (stride, "stride")):
        _pair(given, (MIN_SIDE, MIN_SIDE), what)  # before any file is listed or read
    layout, root, samples = iter_samples(data_dir, dataset, limit)
    num_classes = int(model.num_classes)
    info = None if layout.name == FOLDER else get_dataset(layout.name)
    if info is not None and num_classes != info.num_classes:
        raise BadInputError(f"the model predicts {num_classes} classes but {info.name} has {info.num_classes} classes")
    mode = layout.mode if mode is None else mode
    if mode not in ("whole", "slide"):
        raise BadInputError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if aug_reference not in REFERENCES:
        raise BadInputError(f"aug_reference must be one of {REFERENCES}, got {aug_reference!r}")
    if rng not in RNG_MODES:
        raise BadInputError(f"rng must be one of {RNG_MODES}, got {rng!r}")
    if batch_size < 1 or workers < 0:
        raise BadInputError(f"batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    world = current_world()
    if rng == "sequential" and world.distributed:
        raise BadInputError("rng 'sequential' draws one RNG stream image after image: it needs a single process")
    test_scale = _pair(scale, layout.scale, "scale")
    crop = _pair(crop_size, layout.crop_size, "crop size")
    step = _pair(stride, layout.stride, "stride")
    seed_source = "given"
    if seed is None:
        seed, seed_source = recorded_seed(model)
    if seed is None and rng == "image":
        seed, seed_source = 0, f"default 0; {seed_source}"
    settings = {"mode": mode, "scale": list(test_scale), "aug_test": aug_test, "seed": seed,
                "seed_source": seed_source, "rng": rng,
                "limit": limit, "reduce_zero_label": layout.reduce_zero_label, "ignore_index": IGNORE_INDEX}
    if mode == "slide":
        settings.update(crop_size=list(crop), stride=list(step))
    if aug_test:
        settings.update(aug_ratios=[float(r) for r in aug_ratios], aug_flip=True, aug_reference=aug_reference)

    resize = not aug_test and hasattr(model, "predict_resized")
    loader = torch.utils.data.DataLoader(
        _EvalImages(samples, shard(len(samples), world), layout.reduce_zero_label, test_scale, resize),
        batch_size=batch_size, num_workers=workers, collate_fn=list, shuffle=False,
        generator=torch.Generator().manual_seed(0))  # its own: iterating must not consume the global RNG
    steps = math.ceil(math.ceil(len(samples) / world.size) / batch_size)  # the same on every rank
    areas = np.zeros((len(samples), len(IoUAccumulator.KINDS), num_classes), dtype=np.int64)
    acc = IoUAccumulator(num_classes)
    run = _Runner(model, mode, test_scale, crop, step, aug_test, aug_ratios, aug_reference, rng, seed, batch_size)
    start = time.perf_counter()
    error: Optional[BaseException] = None
    with progress_bar(len(samples), "eval", progress if world.rank == 0 else False, unit="img") as bar:
        if rng == "sequential" and seed is not None:
            torch.manual_seed(seed)
        batches = iter(loader)
        for _ in range(steps):
            done = 0
            if error is None:
                try:
                    items = next(batches, [])
                    for item, pred in zip(items, run(items)):
                        areas[item.index] = acc.areas_of(pred, item.label)
                    done = len(items)
                except Exception as err:  # noqa: BLE001 - shared with the other ranks below
                    error = err
            status = all_sum(torch.tensor([done, 0 if error is None else 1]), world)
            bar.update(int(status[0]))  # every rank's images
            if int(status[1]):
                break
    raise_if_any_failed(error, world)
    areas = all_sum(torch.from_numpy(areas), world).numpy()
    for image_areas in areas:  # dataset order, whoever computed them
        acc.add_areas(image_areas)
    summary, iou, class_acc = acc.metrics()
    settings["world_size"] = world.size
    return EvalResult(
        dataset=layout.name, data_root=str(root), num_images=acc.count,
        aAcc=summary["aAcc"], mIoU=summary["mIoU"], mAcc=summary["mAcc"],
        classes=list(_class_names(model, info.name if info else None)), iou=[two_places(v) for v in iou], acc=[two_places(v) for v in class_acc],
        areas={k: [int(x) for x in v] for k, v in acc.exact.items()},
        settings=settings, seconds=round(time.perf_counter() - start, 3),
    )


@dataclass
class _Runner:
    """Predicts one loader batch with every image's own generator."""

    model: Any
    mode: str
    test_scale: tuple[int, int]
    crop: tuple[int, int]
    stride: tuple[int, int]
    aug_test: bool
    aug_ratios: Sequence[float]
    aug_reference: str
    rng: str
    seed: Optional[int]
    batch_size: int

    def generator(self, index: int) -> Optional[torch.Generator]:
        if self.rng != "image":
            return None
        return torch.Generator().manual_seed(image_seed(self.seed or 0, index))

    def __call__(self, items: list[_Item]) -> list[Any]:
        for item in items:
            if item.error is not None:
                raise BadInputError(item.error)
        gens = [self.generator(item.index) for item in items]
        model, common = self.model, dict(mode=self.mode, crop_size=self.crop, stride=self.stride)
        if self.aug_test:
            return [predict_tta(model, item.image, test_scale=self.test_scale, ratios=self.aug_ratios,
                                reference=self.aug_reference, generator=gen, **common).argmax(dim=0)
                    for item, gen in zip(items, gens)]
        if items and items[0].resized is not None:
            preds = model.predict_resized([item.resized for item in items], generator=gens,
                                          batch_size=self.batch_size, **common)
            return [p.mask for p in preds]
        return [model.predict(item.image, scale=self.test_scale, generator=gen, **common)[0].mask
                for item, gen in zip(items, gens)]
