"""The training data pipeline: against the real MMSeg 1.2.2 transforms (parity-marked), and its
properties on generated images and labels (self-written fixtures)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnext_hub.errors import BadInputError
from segnext_hub.models.preprocessing import MEAN_RGB, STD_RGB, keep_ratio_size, resize_like_opencv
from segnext_hub.training.data import (
    IGNORE_INDEX,
    InfiniteSampler,
    SegmentationFolder,
    TrainTransform,
    crop_is_varied,
    read_label,
    reduce_zero_label,
    resize_nearest,
)
from tests.parity.harness import require_parity_env, run_mmseg

DATA_WORKER = Path(__file__).resolve().parents[1] / "parity" / "data_worker.py"


def noise_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def block_label(rng: np.random.Generator, height: int, width: int, values: int, block: int = 16) -> np.ndarray:
    """Piecewise-constant labels (regions, as in real annotations), upsampled from random blocks."""
    small = rng.integers(0, values, (height // block + 1, width // block + 1), dtype=np.uint8)
    return np.kron(small, np.ones((block, block), np.uint8))[:height, :width]


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


# ---- against MMSeg 1.2.2 ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def mmseg_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """One run of data_worker.py answering every parity test below: (inputs, MMSeg's outputs)."""
    require_parity_env()
    tmp = tmp_path_factory.mktemp("data_parity")
    rng = np.random.default_rng(11)
    inputs: dict = {}
    # Every uint8 value, as a grey PNG and as a palette PNG (ADE20K's annotations are either).
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    inputs["reduce"] = [write_png(tmp / "grey.png", every_value),
                        write_png(tmp / "palette.png", every_value, "P")]
    inputs["rescale"] = [[int(rng.integers(1, 3000)), int(rng.integers(1, 3000)),
                          [int(rng.integers(256, 4097)), int(rng.integers(64, 1025))]] for _ in range(300)]
    inputs["rescale"] += [[683, 512, [2048, 512]], [512, 683, [1024, 256]], [3, 1001, [4096, 1024]]]
    resize: dict = {"bilinear": {"arrays": [], "sizes": []}, "nearest": {"arrays": [], "sizes": []}}
    for i, ((h, w), (nh, nw)) in enumerate([((97, 131), (301, 407)), ((512, 683), (155, 207)),
                                             ((64, 48), (64, 48)), ((300, 500), (599, 998)),
                                             ((77, 91), (23, 250))]):
        np.save(tmp / f"img{i}.npy", noise_image(rng, h, w))
        np.save(tmp / f"lab{i}.npy", block_label(rng, h, w, 150, block=3))
        resize["bilinear"]["arrays"].append(str(tmp / f"img{i}.npy"))
        resize["nearest"]["arrays"].append(str(tmp / f"lab{i}.npy"))
        for kind in resize:
            resize[kind]["sizes"].append([nh, nw])
    inputs["resize"] = resize
    # Class 2 left, class 1 right, an ignored stripe: only windows across the border pass the
    # 0.75 test, so most first windows fail and RandomCrop's redraws decide the result.
    constructed = np.ones((300, 400), np.uint8)
    constructed[:, :150] = 2
    constructed[:, 200:215] = IGNORE_INDEX
    np.save(tmp / "constructed.npy", constructed)
    inputs["crop"] = {"label": str(tmp / "constructed.npy"), "crop_size": [128, 128], "cat_max_ratio": 0.75,
                      "entropies": [[5, i] for i in range(40)]}
    inputs["constructed"] = constructed
    # ADE20K layout, PNG images (decoded identically by OpenCV and Pillow) and one JPEG.
    root = tmp / "ade"
    samples = []
    for i, (h, w) in enumerate([(512, 683), (375, 500), (120, 90), (1100, 1500)]):
        suffix = ".jpg" if i == 1 else ".png"
        image_path = root / "images" / "training" / f"img{i}{suffix}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noise_image(rng, h, w)).save(image_path, quality=95)
        label_path = write_png(root / "annotations" / "training" / f"img{i}.png", block_label(rng, h, w, 151, 40))
        samples += [[str(image_path), label_path, [7, i, draw]] for draw in range(3)]
    inputs["pipeline"] = {"samples": samples}
    inputs["ade_root"] = root
    job = {k: inputs[k] for k in ("reduce", "rescale", "resize", "crop", "pipeline")}
    return inputs, run_mmseg(job, tmp, worker=DATA_WORKER)


@pytest.mark.parity
def test_reduce_zero_label_matches_mmseg_load_annotations(mmseg_reference):
    inputs, theirs = mmseg_reference
    for path, expected in zip(inputs["reduce"], theirs["reduce"]):
        ours = reduce_zero_label(read_label(Path(path)))
        assert ours.dtype == expected.dtype == np.uint8
        assert np.array_equal(ours, expected), path
    assert theirs["reduce"][0][0, 0] == 255 and theirs["reduce"][0][0, 1] == 0  # the rule was exercised


@pytest.mark.parity
def test_keep_ratio_size_matches_mmcv_rescale_size(mmseg_reference):
    inputs, theirs = mmseg_reference
    for (w, h, scale), (their_w, their_h) in zip(inputs["rescale"], theirs["rescale"]):
        assert keep_ratio_size(h, w, tuple(scale)) == (their_h, their_w), (w, h, scale)


@pytest.mark.parity
def test_resizes_match_opencv_pixel_for_pixel(mmseg_reference):
    inputs, theirs = mmseg_reference
    spec = inputs["resize"]
    for path, (h, w), expected in zip(spec["nearest"]["arrays"], spec["nearest"]["sizes"], theirs["resize"]["nearest"]):
        assert np.array_equal(resize_nearest(np.load(path), h, w), expected), (path, h, w)
    for path, (h, w), expected in zip(spec["bilinear"]["arrays"], spec["bilinear"]["sizes"],
                                      theirs["resize"]["bilinear"]):
        chw = torch.from_numpy(np.load(path)).permute(2, 0, 1)
        reference = torch.from_numpy(expected).permute(2, 0, 1).float()
        assert torch.equal(resize_like_opencv(chw, h, w), reference), (path, h, w)
        window = (h // 3, h // 3 + min(h, 128), w // 4, w // 4 + min(w, 100))  # a crop, computed alone
        top, bottom, left, right = window
        assert torch.equal(resize_like_opencv(chw, h, w, window=window), reference[:, top:bottom, left:right])


@pytest.mark.parity
def test_random_crop_cat_max_ratio_matches_mmseg_on_a_constructed_label(mmseg_reference):
    inputs, theirs = mmseg_reference
    label, spec = inputs["constructed"], inputs["crop"]
    transform = TrainTransform(crop_size=128, cat_max_ratio=0.75)
    redrawn = 0
    for entropy, expected in zip(spec["entropies"], theirs["crop"]):
        top, bottom, left, right = transform.crop_window(label, np.random.default_rng(entropy))
        assert np.array_equal(label[top:bottom, left:right], expected), entropy
        first = transform.random_window(np.random.default_rng(entropy), *label.shape)
        redrawn += not crop_is_varied(label[first[0]:first[1], first[2]:first[3]], 0.75)
    assert 5 <= redrawn < len(spec["entropies"])  # the redraw rule decided several crops


@pytest.mark.parity
def test_whole_train_pipeline_matches_mmseg_sample_for_sample(mmseg_reference):
    """Same files, same random draws: the normalised, padded image and label are identical."""
    inputs, theirs = mmseg_reference
    dataset = SegmentationFolder(inputs["ade_root"])
    assert theirs["pipeline"][0]["steps"] == ["LoadImageFromFile", "LoadAnnotations", "RandomResize",
                                              "RandomCrop", "RandomFlip", "PackSegInputs"]
    names = [p.name for p in dataset.images]
    transform = TrainTransform()
    for (image_path, _, entropy), expected in zip(inputs["pipeline"]["samples"], theirs["pipeline"]):
        image, label = dataset.read(names.index(Path(image_path).name))
        ours_image, ours_label = transform(image, label, np.random.default_rng(entropy))
        assert ours_image.shape == expected["image"].shape == (3, 512, 512)
        assert torch.equal(ours_label, expected["label"].long()), entropy
        assert torch.equal(ours_image, expected["image"]), (entropy, (ours_image - expected["image"]).abs().max())


# ---- properties on generated data -------------------------------------------------------------

def test_reduce_zero_label_rule():
    label = np.array([[0, 1, 2], [150, 254, 255]], np.uint8)
    assert reduce_zero_label(label).tolist() == [[255, 0, 1], [149, 253, 255]]
    with pytest.raises(ValueError):
        reduce_zero_label(label.astype(np.int32))


def test_crop_is_varied_needs_two_classes_and_a_strictly_smaller_share():
    assert not crop_is_varied(np.ones((4, 4), np.uint8), 0.75)  # one class
    assert not crop_is_varied(np.full((4, 4), 255, np.uint8), 0.75)  # all ignored
    three_quarters = np.array([1] * 12 + [2] * 4, np.uint8).reshape(4, 4)
    assert not crop_is_varied(three_quarters, 0.75)  # 0.75 is not < 0.75
    with_ignored = three_quarters.copy()
    with_ignored[0, 0] = 255  # 11 of 15 labelled pixels: 0.733
    assert crop_is_varied(with_ignored, 0.75)


def test_samples_are_crop_sized_and_padded_with_zero_and_ignore():
    """An image smaller than the crop: normalised pixels top-left, 0 and 255 bottom/right."""
    rng = np.random.default_rng(0)
    image, label = noise_image(rng, 30, 40), block_label(rng, 30, 40, 3, block=5)
    transform = TrainTransform(crop_size=64, scale=(40, 30), ratio_range=(1.0, 1.0), flip_prob=0.0)
    pixels, target = transform(image, label, np.random.default_rng(1))
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.float32
    assert target.shape == (64, 64) and target.dtype == torch.int64
    mean, std = torch.tensor(MEAN_RGB).view(3, 1, 1), torch.tensor(STD_RGB).view(3, 1, 1)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std
    assert torch.equal(pixels[:, :30, :40], expected)
    assert torch.equal(target[:30, :40], torch.from_numpy(label).long())
    assert (pixels[:, 30:, :] == 0).all() and (pixels[:, :, 40:] == 0).all()
    assert (target[30:, :] == 255).all() and (target[:, 40:] == 255).all()


def test_full_size_samples_and_flip_moves_image_and_label_together():
    rng = np.random.default_rng(1)
    label = block_label(rng, 700, 900, 150, block=37)
    image = np.repeat(label[:, :, None], 3, axis=2)  # the image encodes its label
    transform = TrainTransform(crop_size=512)
    flipped_once = 0
    for seed in range(8):
        pixels, target = transform(image, label, np.random.default_rng(seed))
        assert pixels.shape == (3, 512, 512) and target.shape == (512, 512)
        grey = pixels[0] * STD_RGB[0] + MEAN_RGB[0]
        inside = target != 255  # not padding
        # Bilinear blurs region borders; inside regions the image still reads as its label
        # (were only one of them flipped, they would agree on a few pixels at most).
        agree = (grey[inside].round() == target[inside].float()).float().mean()
        assert agree > 0.5, (seed, agree)
    for seed in range(8):
        plain = TrainTransform(crop_size=512, flip_prob=0.0)(image, label, np.random.default_rng(seed))
        mirrored = TrainTransform(crop_size=512, flip_prob=1.0)(image, label, np.random.default_rng(seed))
        h, w = int((plain[1] != 255).any(1).sum()), int((plain[1] != 255).any(0).sum())  # before padding
        assert torch.equal(mirrored[0][:, :h, :w], plain[0][:, :h, :w].flip(-1))
        assert torch.equal(mirrored[1][:h, :w], plain[1][:h, :w].flip(-1))
        either = transform(image, label, np.random.default_rng(seed))
        flipped_once += torch.equal(either[1], mirrored[1]) and not torch.equal(either[1], plain[1])
    assert 0 < flipped_once < 8


def test_resize_ratio_stays_in_range_and_spans_it():
    transform = TrainTransform()
    ratios = [transform.random_scale(np.random.default_rng(seed))[1] / 512 for seed in range(400)]
    assert 0.5 <= min(ratios) < 0.55 and 1.95 < max(ratios) <= 2.0
    for seed in range(50):
        long_edge, short_edge = transform.random_scale(np.random.default_rng(seed))
        assert 0 <= long_edge - 4 * short_edge <= 3  # one ratio scales both bounds, then int()


@pytest.fixture
def custom_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(80, 100), (90, 70), (64, 64)]):
        write_png(tmp_path / "images" / f"im{i}.png", noise_image(rng, h, w))
        write_png(tmp_path / "labels" / f"im{i}.png", block_label(rng, h, w, 3, block=8))
    (tmp_path / "classes.txt").write_text("sky\n\ntree\nroad\n")
    return tmp_path


def test_same_key_same_sample_and_workers_do_not_change_samples(custom_root: Path):
    dataset = SegmentationFolder(custom_root, custom_root / "classes.txt", seed=4,
                                 transform=TrainTransform(crop_size=48, scale=(128, 64)))
    assert dataset.classes == ["sky", "tree", "road"] and dataset.num_classes == 3 and len(dataset) == 3
    a, b = dataset[(1, 7)], dataset[(1, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [dataset[(1, d)][0] for d in range(8, 12)]
    assert not all(torch.equal(a[0], other) for other in others)

    def batches(workers: int) -> list:
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers,
                                             sampler=InfiniteSampler(len(dataset), seed=4))
        return list(itertools.islice(iter(loader), 4))

    for (x0, y0), (x2, y2) in zip(batches(0), batches(2)):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_infinite_sampler_resumes_its_stream_and_visits_every_image_each_epoch():
    whole = list(itertools.islice(iter(InfiniteSampler(5, seed=2)), 23))
    resumed = list(itertools.islice(iter(InfiniteSampler(5, seed=2, start=9)), 14))
    assert resumed == whole[9:]
    assert [draw for _, draw in whole] == list(range(23))
    for epoch in range(4):
        assert sorted(index for index, _ in whole[epoch * 5:(epoch + 1) * 5]) == [0, 1, 2, 3, 4]
    assert [i for i, _ in whole[:5]] != [i for i, _ in whole[5:10]]  # reshuffled per epoch


def test_ade20k_layout_uses_its_150_classes_and_reduces_zero(tmp_path: Path):
    rng = np.random.default_rng(5)
    write_png(tmp_path / "images" / "training" / "a.png", noise_image(rng, 40, 50))
    raw = block_label(rng, 40, 50, 151, block=5)
    write_png(tmp_path / "annotations" / "training" / "a.png", raw)
    dataset = SegmentationFolder(tmp_path)
    assert dataset.num_classes == 150 and dataset.classes[0] == "wall" and dataset.reduce_zero_label
    assert len(dataset.palette) == 150
    assert np.array_equal(dataset.read(0)[1], reduce_zero_label(raw))


@pytest.mark.parametrize("breakage, message", [
    ("no_images", "no images"),
    ("missing_label", "have no label"),
    ("other_size", "is 40x30 but its image"),
    ("big_value", "holds value 7; expected 0..2 or 255"),
    ("rgb_label", "single-channel"),
    ("no_classes", "give its classes"),
    ("empty_classes", "names no classes"),
    ("duplicate_class", "'sky' more than once"),
    ("no_layout", "neither images/ + labels/"),
])
def test_bad_folders_fail_with_one_clear_line(custom_root: Path, breakage: str, message: str):
    classes: object = custom_root / "classes.txt"
    if breakage == "no_images":
        for path in (custom_root / "images").iterdir():
            path.unlink()
    elif breakage == "missing_label":
        (custom_root / "labels" / "im1.png").unlink()
    elif breakage == "other_size":
        write_png(custom_root / "labels" / "im0.png", np.zeros((30, 40), np.uint8))
    elif breakage == "big_value":
        write_png(custom_root / "labels" / "im0.png", np.full((80, 100), 7, np.uint8))
    elif breakage == "rgb_label":
        write_png(custom_root / "labels" / "im0.png", np.zeros((80, 100, 3), np.uint8))
    elif breakage == "no_classes":
        classes = None
    elif breakage == "empty_classes":
        classes = []
    elif breakage == "duplicate_class":
        classes = ["sky", "road", "sky"]
    elif breakage == "no_layout":
        (custom_root / "labels").rename(custom_root / "masks")
    with pytest.raises(BadInputError) as info:
        SegmentationFolder(custom_root, classes)[0]
    assert message in str(info.value) and "\n" not in str(info.value)
