"""Evaluation on small generated datasets, checked against metrics computed independently here.

A fake model returns predictions fixed in advance (looked up by image size), so every
expected number comes from a confusion matrix built in this file with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from segnext_hub.errors import BadInputError
from segnext_hub.tasks import evaluate as ev
from segnext_hub.tasks.tta import TTA_RATIOS, predict_tta

ADE_SIZES = [(24, 32), (30, 20), (17, 29), (26, 26)]  # distinct: the fake model keys on size
CITY_SIZES = [(16, 32), (20, 40)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here; see conftest


class FakeModel:
    """Quacks like SegNeXt.predict; returns the mask stored for the image's (H, W)."""

    def __init__(self, num_classes, preds=None, logits_fn=None):
        self.num_classes = num_classes
        self.preds = preds or {}
        self.logits_fn = logits_fn
        self.calls = []

    def predict(self, image, mode="whole", scale=(2048, 512), size_divisor=32, crop_size=(512, 512),
                stride=(341, 341), return_logits=False, generator=None):
        arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        self.calls.append(dict(shape=arr.shape[:2], mode=mode, scale=scale, crop_size=crop_size,
                               stride=stride, flipped=bool(arr[:, 0, 0].mean() > arr[:, -1, 0].mean()),
                               draw=float(torch.rand((), generator=generator))))
        if return_logits:
            return [SimpleNamespace(mask=None, logits=self.logits_fn(arr))]
        return [SimpleNamespace(mask=torch.from_numpy(self.preds[arr.shape[:2]]), logits=None)]


def _ramp(h, w):
    """RGB image whose red channel rises left to right: a flipped view is detectable."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, :, 0] = np.linspace(10, 240, w).round().astype(np.uint8)[None, :]
    img[:, :, 1] = 128
    return img


def make_ade(parent: Path, rng, sizes=ADE_SIZES, max_raw=12):
    """ADE20K layout; raw labels 0..max_raw (0 = 'other'), one raw 255 pixel per image."""
    root = parent / "ADEChallengeData2016"
    (root / "images/validation").mkdir(parents=True)
    (root / "annotations/validation").mkdir(parents=True)
    preds, labels = {}, {}
    for i, (h, w) in enumerate(sizes):
        name = f"ADE_val_{i:08d}"
        Image.fromarray(_ramp(h, w)).save(root / f"images/validation/{name}.jpg")
        raw = rng.integers(0, max_raw + 1, (h, w)).astype(np.uint8)
        raw[0, 0] = 255
        Image.fromarray(raw).save(root / f"annotations/validation/{name}.png")
        reduced = raw.astype(np.int64) - 1  # the convention, written independently
        reduced[(raw == 0) | (raw == 255)] = 255
        pred = np.where(rng.random((h, w)) < 0.6, np.clip(reduced, 0, 149), rng.integers(0, max_raw, (h, w)))
        pred[-1, -1] = 140  # a class predicted once and never labelled
        preds[(h, w)] = pred.astype(np.int64)
        labels[(h, w)] = reduced
    return root, preds, labels


def make_cityscapes(parent: Path, rng):
    root = parent / "cityscapes"
    preds, labels = {}, {}
    for city, (h, w) in zip(("aachen", "bremen"), CITY_SIZES):
        (root / "leftImg8bit/val" / city).mkdir(parents=True)
        (root / "gtFine/val" / city).mkdir(parents=True)
        stem = f"{city}_000000_000019"
        Image.fromarray(_ramp(h, w)).save(root / f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png")
        label = rng.integers(0, 19, (h, w)).astype(np.uint8)
        label[: h // 4] = 255
        Image.fromarray(label).save(root / f"gtFine/val/{city}/{stem}_gtFine_labelTrainIds.png")
        preds[(h, w)] = np.where(rng.random((h, w)) < 0.5, label % 19, rng.integers(0, 19, (h, w))).astype(np.int64)
        labels[(h, w)] = label.astype(np.int64)
    return root, preds, labels


def reference_metrics(pairs, n):
    """Independent mIoU: a confusion matrix over labelled pixels (label != 255)."""
    cm = np.zeros((n, n), dtype=np.int64)
    extra_pred = np.zeros(n, dtype=np.int64)  # predictions on out-of-range labels
    for pred, label in pairs:
        valid = label != 255
        inside = valid & (label < n)
        np.add.at(cm, (label[inside], pred[inside]), 1)
        extra_pred += np.bincount(pred[valid & (label >= n)], minlength=n)
    tp = np.diag(cm)
    label_area = cm.sum(axis=1)
    pred_area = cm.sum(axis=0) + extra_pred
    union = label_area + pred_area - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
        acc = tp / label_area
    return dict(aAcc=100 * tp.sum() / label_area.sum(), mIoU=100 * np.nanmean(iou), mAcc=100 * np.nanmean(acc),
                iou=100 * iou, acc=100 * acc, intersect=tp, union=union, pred_label=pred_area, label=label_area)


def assert_matches(result, ref):
    for key in ("aAcc", "mIoU", "mAcc"):
        assert abs(getattr(result, key) - ref[key]) <= 0.0051, key  # MMSeg rounds to 2 places
    for key in ("intersect", "union", "pred_label", "label"):
        assert result.areas[key] == ref[key].tolist(), key
    ours_iou, ours_acc = np.array(result.iou), np.array(result.acc)
    np.testing.assert_array_equal(np.isnan(ours_iou), np.isnan(ref["iou"]))
    np.testing.assert_array_equal(np.isnan(ours_acc), np.isnan(ref["acc"]))
    np.testing.assert_allclose(ours_iou, ref["iou"], atol=0.0051, equal_nan=True)
    np.testing.assert_allclose(ours_acc, ref["acc"], atol=0.0051, equal_nan=True)


@pytest.fixture()
def ade(tmp_path):
    return make_ade(tmp_path, np.random.default_rng(0))


def test_ade20k_metrics_match_confusion_matrix(tmp_path, ade):
    root, preds, labels = ade
    model = FakeModel(150, preds)
    result = ev.evaluate(model, root, progress=False)
    assert result.dataset == "ade20k" and result.num_images == 4
    assert_matches(result, reference_metrics([(preds[s], labels[s]) for s in ADE_SIZES], 150))
    # ADE20K defaults: whole-image inference after a keep-ratio resize to (2048, 512).
    assert {(c["mode"], c["scale"]) for c in model.calls} == {("whole", (2048, 512))}
    assert result.classes[0] == "wall" and len(result.classes) == 150


def test_reduce_zero_label_and_ignore_index(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    (root / "images/validation").mkdir(parents=True)
    (root / "annotations/validation").mkdir(parents=True)
    Image.fromarray(_ramp(2, 3)).save(root / "images/validation/a.jpg")
    # raw 0 -> ignored, raw 1 -> class 0, raw 3 -> class 2, raw 255 -> ignored
    Image.fromarray(np.array([[0, 1, 3], [255, 1, 1]], dtype=np.uint8)).save(root / "annotations/validation/a.png")
    np.testing.assert_array_equal(ev.load_label(root / "annotations/validation/a.png", True),
                                  [[255, 0, 2], [255, 0, 0]])
    pred = np.array([[5, 0, 2], [7, 0, 1]])
    result = ev.evaluate(FakeModel(150, {(2, 3): pred}), tmp_path, progress=False)
    assert result.areas["label"][:3] == [3, 0, 1]
    assert result.areas["pred_label"][:3] == [2, 1, 1]  # predictions on ignored pixels do not count
    assert result.aAcc == 75.0
    assert result.iou[0] == pytest.approx(200 / 3, abs=0.005) and result.iou[2] == 100.0
    assert result.iou[1] == 0.0 and np.isnan(result.acc[1])  # predicted only: IoU 0, Acc NaN
    assert np.isnan(result.iou[3]) and np.isnan(result.acc[3])  # absent everywhere: NaN, left out of the means
    assert result.mIoU == pytest.approx((200 / 3 + 0 + 100) / 3, abs=0.005)
    assert result.mAcc == pytest.approx((2 / 3 * 100 + 100) / 2, abs=0.005)


def test_cityscapes_layout_defaults_and_no_zero_reduction(tmp_path):
    root, preds, labels = make_cityscapes(tmp_path, np.random.default_rng(1))
    model = FakeModel(19, preds)
    result = ev.evaluate(model, tmp_path, progress=False)  # the parent folder works too
    assert result.dataset == "cityscapes" and result.data_root == str(root)
    assert_matches(result, reference_metrics([(preds[s], labels[s]) for s in CITY_SIZES], 19))
    assert model.calls[0]["mode"] == "slide"
    assert (model.calls[0]["scale"], model.calls[0]["crop_size"], model.calls[0]["stride"]) == (
        (2048, 1024), (1024, 1024), (768, 768))
    assert result.settings["reduce_zero_label"] is False
    assert result.areas["label"][0] > 0  # label 0 (road) is a class here


def test_dataset_root_or_parent_and_explicit_name(ade):
    root, preds, _ = ade
    a = ev.evaluate(FakeModel(150, preds), root, progress=False)
    b = ev.evaluate(FakeModel(150, preds), root.parent, dataset="ADE20K", progress=False)
    assert a.to_dict()["mIoU"] == b.to_dict()["mIoU"] and a.data_root == b.data_root == str(root)
    with pytest.raises(BadInputError, match="no dataset layout"):
        ev.evaluate(FakeModel(19, preds), root, dataset="cityscapes", progress=False)


def test_limit_takes_first_images_in_sorted_order(ade):
    root, preds, labels = ade
    model = FakeModel(150, preds)
    result = ev.evaluate(model, root, limit=2, progress=False)
    assert result.num_images == 2 and [c["shape"] for c in model.calls] == ADE_SIZES[:2]
    assert_matches(result, reference_metrics([(preds[s], labels[s]) for s in ADE_SIZES[:2]], 150))
    with pytest.raises(BadInputError, match="limit"):
        ev.evaluate(model, root, limit=0, progress=False)


def test_bad_layouts_and_inputs_fail_clearly(tmp_path, ade):
    root, preds, _ = ade
    with pytest.raises(BadInputError, match="does not exist"):
        ev.evaluate(FakeModel(150, preds), tmp_path / "nope", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no dataset layout"):
        ev.evaluate(FakeModel(150, preds), empty, progress=False)
    with pytest.raises(BadInputError, match="150 classes"):
        ev.evaluate(FakeModel(19, preds), root, progress=False)
    with pytest.raises(BadInputError, match="unknown dataset"):
        ev.evaluate(FakeModel(150, preds), root, dataset="pascal", progress=False)
    (root / "annotations/validation/ADE_val_00000002.png").unlink()
    with pytest.raises(BadInputError, match="1 image\\(s\\) have no label.*ADE_val_00000002"):
        ev.evaluate(FakeModel(150, preds), root, progress=False)


def test_each_image_draws_from_its_own_seeded_generator(ade):
    root, preds, _ = ade
    model = FakeModel(150, preds)
    ev.evaluate(model, root, seed=7, progress=False)
    expected = [float(torch.rand((), generator=torch.Generator().manual_seed(ev.image_seed(7, i))))
                for i in range(len(ADE_SIZES))]
    assert [c["draw"] for c in model.calls] == expected and len(set(expected)) == len(ADE_SIZES)
    model.calls.clear()
    ev.evaluate(model, root, seed=7, limit=2, batch_size=3, progress=False)  # same images, same draws
    assert [c["draw"] for c in model.calls] == expected[:2]
    model.calls.clear()
    ev.evaluate(model, root, seed=None, progress=False)  # None is seed 0
    assert [c["draw"] for c in model.calls] == [
        float(torch.rand((), generator=torch.Generator().manual_seed(ev.image_seed(0, i)))) for i in range(4)]


def test_sequential_rng_seeds_once_and_runs_on(ade):
    root, preds, _ = ade
    model = FakeModel(150, preds)
    ev.evaluate(model, root, seed=7, rng="sequential", progress=False)
    torch.manual_seed(7)
    assert [c["draw"] for c in model.calls] == [float(torch.rand(())) for _ in ADE_SIZES]
    with pytest.raises(BadInputError, match="rng must be"):
        ev.evaluate(model, root, rng="global", progress=False)


def test_image_seed_is_a_pure_function_of_seed_and_index():
    seeds = {ev.image_seed(s, i) for s in (0, 1, 2**40, -3) for i in range(50)}
    assert len(seeds) == 200 and all(0 <= v < 2**63 for v in seeds)
    assert ev.image_seed(5, 3) == ev.image_seed(5, 3)


def test_result_is_json_serialisable_with_nan_as_null(ade):
    root, preds, _ = ade
    result = ev.evaluate(FakeModel(150, preds), root, progress=False)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["per_class"][140]["Acc"] is None and data["per_class"][140]["IoU"] == 0.0
    assert data["per_class"][149]["IoU"] is None
    assert data["mIoU"] == result.mIoU and data["settings"]["mode"] == "whole"
    table = result.format_table()
    assert "wall" in table and "mIoU" in table


# ----------------------------------------------------------------------------- TTA
def _mmcv_view(h, w, r):
    """mmcv Resize(scale_factor=r, keep_ratio=True), worked out independently of tta.py."""
    bound_long, bound_short = sorted((int(w * r + 0.5), int(h * r + 0.5)), reverse=True)
    f = min(bound_long / max(h, w), bound_short / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def test_tta_views_scales_and_flip_order():
    h, w = 30, 45
    model = FakeModel(3, logits_fn=lambda a: torch.zeros(3, *a.shape[:2]))
    predict_tta(model, _ramp(h, w), mode="slide", crop_size=(8, 8), stride=(4, 4))
    sizes = [c["shape"] for c in model.calls]
    assert sizes == [_mmcv_view(h, w, r) for r in TTA_RATIOS for _ in (0, 1)]
    assert sizes[:2] == [(15, 23), (15, 23)] and sizes[4:6] == [(30, 45), (30, 45)]
    assert [c["flipped"] for c in model.calls] == [False, True] * 6  # flip is the inner loop
    assert all(c["scale"] is None and c["mode"] == "slide" and c["crop_size"] == (8, 8) for c in model.calls)
    # MMSeg 0.x style: ratios of the test scale, then a keep-ratio fit.
    model.calls.clear()
    predict_tta(model, _ramp(h, w), test_scale=(2048, 512), reference="test_scale", ratios=(0.5, 1.0), flip=False)
    assert [c["shape"] for c in model.calls] == [(256, 384), (512, 768)]


def test_tta_undoes_the_flip():
    h, w = 6, 10
    img = _ramp(h, w)

    def logits(view):  # class 0's logit follows the red ramp *of the view it sees*
        red = torch.from_numpy(view[:, :, 0].astype(np.float32)) / 40.0
        return torch.stack([red, torch.zeros_like(red)])

    probs = predict_tta(FakeModel(2, logits_fn=logits), img, ratios=(1.0,))
    red = img[:, :, 0].astype(np.float64) / 40.0
    expected0 = np.exp(red) / (np.exp(red) + 1.0)  # both views agree once the flip is undone
    np.testing.assert_allclose(probs[0].numpy(), expected0, rtol=1e-6)
    assert probs.shape == (2, h, w)


def test_tta_averages_probabilities_not_logits():
    h, w = 12, 16

    def logits(view):  # spatially constant, depends on the view's width and flip
        vh, vw = view.shape[:2]
        flipped = view[0, 0, 0] > view[0, -1, 0]
        vals = torch.tensor([vw / 4.0, 0.0, 3.0 if flipped else -3.0])
        return vals[:, None, None].expand(3, vh, vw).clone()

    ratios = (0.5, 1.0, 1.75)
    probs = predict_tta(FakeModel(3, logits_fn=logits), _ramp(h, w), ratios=ratios)
    expected = np.zeros(3)
    for r in ratios:
        vw = _mmcv_view(h, w, r)[1]
        for third in (-3.0, 3.0):
            z = np.array([vw / 4.0, 0.0, third])
            expected += np.exp(z) / np.exp(z).sum()
    expected /= 2 * len(ratios)
    assert probs.shape == (3, h, w)
    np.testing.assert_allclose(probs.mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(dim=0).numpy(), 1.0, rtol=1e-5)


def test_evaluate_aug_test_uses_tta_argmax(monkeypatch, ade):
    root, preds, labels = ade
    seen = []

    def fake_tta(model, image, **kwargs):
        seen.append(kwargs)
        pred = torch.from_numpy(preds[image.shape[:2]])
        return torch.nn.functional.one_hot(pred, 150).permute(2, 0, 1).float()

    monkeypatch.setattr(ev, "predict_tta", fake_tta)
    result = ev.evaluate(FakeModel(150, {}), root, aug_test=True, progress=False)
    assert_matches(result, reference_metrics([(preds[s], labels[s]) for s in ADE_SIZES], 150))
    assert seen[0]["ratios"] == TTA_RATIOS and seen[0]["reference"] == "image" and seen[0]["mode"] == "whole"
    assert result.settings["aug_test"] is True


def test_real_tiny_model_end_to_end(tmp_path):
    from segnext_hub import create_model
    from segnext_hub.models.random_init import randomize_

    root, _, _ = make_ade(tmp_path, np.random.default_rng(2), sizes=[(32, 40), (36, 28)])
    model = randomize_(create_model("t"), seed=0, calibration_size=32, calibration_batches=1)
    plain = ev.evaluate(model, root, scale=(64, 32), seed=3, progress=False)
    assert plain.num_images == 2 and 0.0 <= plain.aAcc <= 100.0
    tta = ev.evaluate(model, root, aug_test=True, aug_ratios=(0.75, 1.25), seed=3, progress=False)
    again = ev.evaluate(model, root, aug_test=True, aug_ratios=(0.75, 1.25), seed=3, progress=False)
    assert tta.to_dict()["areas"] == again.to_dict()["areas"]  # the seed fixes every view's bases
    image = ev.load_image(root / "images/validation/ADE_val_00000000.jpg")
    torch.manual_seed(3)
    probs = predict_tta(model, image, ratios=(0.75, 1.25))
    assert probs.shape == (150, 32, 40)
    torch.testing.assert_close(probs.sum(0), torch.ones(32, 40))


# ----------------------------------------------------------------------------- batches and workers
@pytest.mark.parametrize("fused", [False, True], ids=["exact", "fused"])
def test_batches_and_workers_do_not_change_metrics(tmp_path, fused):
    """Real T model (random weights): batch 3 with 2 loader workers equals batch 1 in-process."""
    from segnext_hub import create_model
    from segnext_hub.models.random_init import randomize_

    model = randomize_(create_model("t", md_r=16), seed=0, calibration_size=32, calibration_batches=1)
    city_model = randomize_(create_model("t", md_r=16, num_classes=19), seed=0, calibration_size=32,
                            calibration_batches=1)
    if fused:
        model, city_model = model.fuse(), city_model.fuse()
    ade_root, _, _ = make_ade(tmp_path, np.random.default_rng(3), sizes=[(32, 40), (36, 28), (32, 40), (30, 40)])
    city_root, _, _ = make_cityscapes(tmp_path, np.random.default_rng(4))
    runs = [(model, ade_root, dict(scale=(64, 32))),
            # overlapping windows (2 x 3 on the 48x96 view), within the documented 32..8192 sizes
            (city_model, city_root, dict(scale=(96, 48), crop_size=(40, 40), stride=(32, 32)))]
    for net, root, extra in runs:
        one = ev.evaluate(net, root, seed=2, progress=False, **extra)
        many = ev.evaluate(net, root, seed=2, progress=False, batch_size=3, workers=2, **extra)
        for key in ("areas", "aAcc", "mIoU", "mAcc", "iou", "acc"):  # NaN as None
            assert many.to_dict()[key] == one.to_dict()[key], key


def test_predict_files_batched_writes_the_same_masks(tmp_path):
    from segnext_hub import create_model
    from segnext_hub.models.random_init import randomize_
    from segnext_hub.tasks.inference import predict_files

    model = randomize_(create_model("t", md_r=16), seed=0, calibration_size=32, calibration_batches=1)
    paths = []
    for i, (h, w) in enumerate([(40, 48), (40, 48), (30, 50)]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(_ramp(h, w)[:, ::-1].copy() if i == 1 else _ramp(h, w)).save(paths[-1])
    one = predict_files(model, paths, tmp_path / "one", progress=False)
    many = predict_files(model, paths, tmp_path / "many", progress=False, batch_size=2, workers=1)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(np.array(Image.open(a["classes"])), np.array(Image.open(b["classes"])))
    (tmp_path / "bad.png").write_bytes(b"no image")
    with pytest.raises(BadInputError, match="cannot read image"):
        predict_files(model, [paths[0], tmp_path / "bad.png"], tmp_path / "bad", progress=False, workers=1)
