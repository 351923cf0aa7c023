"""segnext_hub.evaluate (plain and ms+flip TTA) against MMSeg 1.2.2's own dataset, pipelines,
SegTTAModel and IoUMetric: every predicted pixel and every metric must agree."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnext_hub import create_model
from segnext_hub.models.random_init import randomize_
from segnext_hub.tasks import evaluate as ev
from tests.parity.harness import require_parity_env

pytestmark = [pytest.mark.parity, pytest.mark.usefixtures("one_torch_thread")]

SEED = 1234
WORKER = Path(__file__).with_name("eval_worker.py")
CITY = dict(scale=(256, 128), crop_size=(64, 64), stride=(48, 48))  # small, so slide has 15 tiles


def _smooth(rng, h, w):
    base = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    t = torch.from_numpy(base).permute(2, 0, 1)[None]
    up = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return up[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _datasets(tmp: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ade = tmp / "ade" / "ADEChallengeData2016"
    (ade / "images/validation").mkdir(parents=True)
    (ade / "annotations/validation").mkdir(parents=True)
    for i, (h, w) in enumerate([(96, 128), (120, 90), (77, 101)]):
        Image.fromarray(_smooth(rng, h, w)).save(ade / f"images/validation/ADE_val_{i:08d}.jpg", quality=90)
        Image.fromarray(rng.integers(0, 151, (h, w)).astype(np.uint8)).save(ade / f"annotations/validation/ADE_val_{i:08d}.png")
    city = tmp / "cityscapes"
    for name in ("frankfurt", "lindau"):
        (city / "leftImg8bit/val" / name).mkdir(parents=True)
        (city / "gtFine/val" / name).mkdir(parents=True)
        label = rng.integers(0, 19, (64, 128)).astype(np.uint8)
        label[:8] = 255
        Image.fromarray(_smooth(rng, 64, 128)).save(city / f"leftImg8bit/val/{name}/{name}_000000_000019_leftImg8bit.png")
        Image.fromarray(label).save(city / f"gtFine/val/{name}/{name}_000000_000019_gtFine_labelTrainIds.png")
    return ade, city




def _metric_trials():
    """Random pairs with 255s, out-of-range labels, absent and predicted-only classes."""
    rng = np.random.default_rng(1)
    trials = []
    for t in range(12):
        n = int(rng.integers(2, 12))
        pairs = []
        for _ in range(int(rng.integers(1, 4))):
            h, w = (int(v) for v in rng.integers(5, 40, 2))
            pred = rng.integers(0, n, (h, w))
            label = rng.integers(0, n + 3, (h, w))
            label[rng.random((h, w)) < 0.2] = 255
            if t % 3 == 0:
                pred[pred == 0], label[label == 0] = 1, 1  # class 0 nowhere: NaN
            if t % 3 == 1:
                label[label == 1] = 255  # class 1 only predicted: IoU 0, Acc NaN
            pairs.append((pred, label))
        trials.append((pairs, n))
    return trials


def test_evaluate_and_tta_match_mmseg(tmp_path, monkeypatch):
    python = require_parity_env()
    ade, city = _datasets(tmp_path)
    ade_model = randomize_(create_model("t", md_r=16), seed=5)
    city_model = randomize_(create_model("t", md_r=16, num_classes=19), seed=6)
    torch.save(ade_model.state_dict(), tmp_path / "ade.pt")
    torch.save(city_model.state_dict(), tmp_path / "city.pt")
    runs = []
    # evaluate()'s default rng="image": image i's bases from a generator seeded with
    # image_seed(SEED, i); MMSeg gets torch.manual_seed(image_seed(SEED, i)) before image i.
    ade_seeds, city_seeds = ([ev.image_seed(SEED, i) for i in range(n)] for n in (3, 2))
    for tta in (False, True):
        runs.append(dict(variant="t", md_r=16, weights=str(tmp_path / "ade.pt"), dataset="ade20k",
                         data_root=str(ade), tta=tta, seeds=ade_seeds))
        runs.append(dict(variant="t", md_r=16, num_classes=19, weights=str(tmp_path / "city.pt"),
                         dataset="cityscapes", data_root=str(city), tta=tta, scale=CITY["scale"], seeds=city_seeds,
                         test_cfg=dict(mode="slide", crop_size=CITY["crop_size"], stride=CITY["stride"])))
    # rng="sequential": seeded once, the global RNG runs on through the images (tools/test.py).
    runs.append(dict(variant="t", md_r=16, weights=str(tmp_path / "ade.pt"), dataset="ade20k",
                     data_root=str(ade), tta=False, sequential=True))
    trials = _metric_trials()
    torch.save([([(torch.from_numpy(p), torch.from_numpy(l)) for p, l in pairs], n) for pairs, n in trials],
               tmp_path / "trials.pt")
    job = dict(runs=runs, seed=SEED, out=str(tmp_path / "out.pt"), metric_trials=str(tmp_path / "trials.pt"))
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([python, str(WORKER), str(tmp_path / "job.json")], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = torch.load(tmp_path / "out.pt", weights_only=False)
    theirs = out["runs"]

    for (pairs, n), (summary, iou, acc) in zip(trials, out["metric_trials"]):
        ours = ev.IoUAccumulator(n)
        for p, l in pairs:
            ours.add(p, l)
        our_summary, our_iou, our_acc = ours.metrics()
        for key in ("aAcc", "mIoU", "mAcc"):
            a, b = round(summary[key], 2), our_summary[key]
            assert a == b or (np.isnan(a) and np.isnan(b)), (n, key, a, b)
        np.testing.assert_array_equal(our_iou, iou)
        np.testing.assert_array_equal(our_acc, acc)

    preds = []  # every prediction evaluate() scores, in order
    real_areas = ev.IoUAccumulator.areas_of
    monkeypatch.setattr(ev.IoUAccumulator, "areas_of",
                        lambda self, pred, label: (preds.append(pred), real_areas(self, pred, label))[1])
    for run, ref in zip(runs, theirs):
        model = ade_model if run["dataset"] == "ade20k" else city_model
        extra = CITY if run["dataset"] == "cityscapes" else {}
        preds.clear()
        rng = "sequential" if run.get("sequential") else "image"
        result = ev.evaluate(model, run["data_root"], aug_test=run["tta"], seed=SEED, rng=rng, progress=False,
                             **extra)
        where = (run["dataset"], "tta" if run["tta"] else "plain", rng)
        for key in ("aAcc", "mIoU", "mAcc"):
            assert getattr(result, key) == round(ref["metrics"][key], 2), (*where, key)
        layout, root = ev.find_dataset(run["data_root"])
        assert [str(s.image) for s in ev.list_samples(layout, root)] == ref["paths"]
        assert len(preds) == len(ref["preds"])
        for ours, expected in zip(preds, ref["preds"]):
            assert torch.equal(ours, expected.long()), where
