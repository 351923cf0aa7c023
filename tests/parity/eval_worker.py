"""Runs inside the MMSegmentation 1.2.2 virtualenv; never imported by segnext_hub.

Usage: python eval_worker.py JOB.json. For each run in the job, builds MMSeg's dataset
with the config's test (or TTA) pipeline, runs the model (wrapped in ``SegTTAModel`` for
TTA) image by image with ``torch.manual_seed(seeds[i])`` before image i (or, for a
``sequential`` run, ``torch.manual_seed(seed)`` once before the first, as tools/test.py), feeds
``IoUMetric``, and saves the predictions and metrics with torch.save. ``metric_trials``
runs ``IoUMetric`` alone on saved prediction/label pairs.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import mmseg_worker  # noqa: F401  (stubs mmcv._ext, registers MMSeg modules)
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, MODELS

DATASET_CONFIGS = {
    "ade20k": ("ade20k.py", "ADE20KDataset", dict(img_path="images/validation", seg_map_path="annotations/validation")),
    "cityscapes": ("cityscapes.py", "CityscapesDataset", dict(img_path="leftImg8bit/val", seg_map_path="gtFine/val")),
}


def run_one(run: dict, seed: int) -> dict:
    cfg = mmseg_worker.build_config(run)
    if run.get("test_cfg"):
        cfg.model.test_cfg = run["test_cfg"]
    model = MODELS.build(cfg.model)
    model.load_state_dict(torch.load(run["weights"]), strict=True)
    model.eval()
    fname, dataset_type, prefix = DATASET_CONFIGS[run["dataset"]]
    base = os.path.join(os.path.dirname(mmseg_worker.mmseg.__file__), ".mim", "configs", "_base_", "datasets", fname)
    data_cfg = Config.fromfile(base)
    pipeline = copy.deepcopy(data_cfg.tta_pipeline if run["tta"] else data_cfg.test_pipeline)
    if run.get("scale") and not run["tta"]:
        pipeline[1]["scale"] = tuple(run["scale"])
    dataset = DATASETS.build(dict(type=dataset_type, data_root=run["data_root"], data_prefix=prefix, pipeline=pipeline))
    net = MODELS.build(dict(type="SegTTAModel", module=model)) if run["tta"] else model
    metric = IoUMetric()
    metric.dataset_meta = dataset.metainfo
    preds, paths = [], []
    if run.get("sequential"):
        torch.manual_seed(seed)
    for i in range(len(dataset)):
        data = pseudo_collate([dataset[i]])
        if not run.get("sequential"):
            torch.manual_seed(run["seeds"][i])
        with torch.no_grad():
            outs = net.test_step(data)
        metric.process(data, [o.to_dict() for o in outs])
        preds.append(outs[0].pred_sem_seg.data[0].clone())
        paths.append(outs[0].img_path)
    metrics = {k: float(v) for k, v in metric.compute_metrics(metric.results).items()}
    return {"preds": preds, "paths": paths, "metrics": metrics}


def metric_trials(path: str) -> list:
    """IoUMetric alone on saved (pred, label, num_classes) trials: summary and per-class tables."""
    results = []
    for pairs, n in torch.load(path):
        metric = IoUMetric()
        metric.dataset_meta = {"classes": [str(i) for i in range(n)]}
        metric.process({}, [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": l[None]}} for p, l in pairs])
        summary = {k: float(v) for k, v in metric.compute_metrics(metric.results).items()}
        areas = tuple(zip(*metric.results))
        per_class = IoUMetric.total_area_to_metrics(*(sum(a) for a in areas), ["mIoU"])
        results.append((summary, (per_class["IoU"] * 100).round(2), (per_class["Acc"] * 100).round(2)))
    return results


def main() -> None:
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(job.get("threads", 1))
    out = {"runs": [run_one(run, job["seed"]) for run in job.get("runs", [])]}
    if job.get("metric_trials"):
        out["metric_trials"] = metric_trials(job["metric_trials"])
    torch.save(out, job["out"])


if __name__ == "__main__":
    main()
