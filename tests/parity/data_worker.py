"""Runs MMSegmentation 1.2.2's training transforms inside its virtualenv; never imported by segnext_hub.

Usage: python data_worker.py JOB.json. Each key of the job asks for one kind of reference
output, written with torch.save to job["out"]:

* ``reduce``: label PNG paths -> ``LoadAnnotations(reduce_zero_label=True)``'s gt_seg_map.
* ``rescale``: [w, h, [a, b]] triples -> ``mmcv.rescale_size((w, h), (a, b))``.
* ``resize``: .npy arrays and target sizes -> ``mmcv.imresize`` (OpenCV) bilinear / nearest.
* ``crop``: a label, a crop size, cat_max_ratio and seeds -> ``RandomCrop``'s cropped label.
* ``pipeline``: ADE20K-layout image/label files and seeds -> the SegNeXt config's train
  pipeline (PhotoMetricDistortion dropped) and its ``SegDataPreProcessor(training=True)``.

MMSeg draws from numpy's global legacy random state; segnext_hub draws from a
``numpy.random.Generator``. To compare whole samples, the three functions the transforms
call are bridged to a Generator seeded as the test says (``bridge_random``), keeping each
legacy function's meaning: ``random_sample()`` is one uniform double, ``randint(lo, hi)``
one integer in [lo, hi), ``choice(options, p)`` one uniform looked up in cumsum(p).
"""

from __future__ import annotations

import json
import sys

# First: mmseg_worker (same folder) stands in for mmcv-lite's missing compiled ops before
# mmseg is imported, and knows where the wheel ships the SegNeXt configs.
from mmseg_worker import config_path  # noqa: I001

import mmcv  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmseg.registry import MODELS, TRANSFORMS  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

register_all_modules()


def bridge_random(entropy: list) -> None:
    """Point np.random's legacy functions used by the transforms at one seeded Generator."""
    gen = np.random.default_rng(entropy)

    def random_sample(size=None):
        assert size is None, "the transforms draw one number at a time"
        return gen.random()

    def randint(low, high=None, size=None):
        assert high is not None and size is None
        return int(gen.integers(low, high))

    def choice(options, size=None, replace=True, p=None):
        assert size is None and p is not None
        index = int(np.searchsorted(np.cumsum(p), gen.random(), side="right"))
        return options[index]

    np.random.random_sample = random_sample
    np.random.randint = randint
    np.random.choice = choice


def reduce_labels(paths: list) -> list:
    load = TRANSFORMS.build(dict(type="LoadAnnotations", reduce_zero_label=True))
    return [load(dict(seg_map_path=p, reduce_zero_label=True, seg_fields=[]))["gt_seg_map"] for p in paths]


def resize(spec: dict) -> dict:
    out = {"bilinear": [], "nearest": []}
    for kind in out:
        for path, (h, w) in zip(spec[kind]["arrays"], spec[kind]["sizes"]):
            out[kind].append(mmcv.imresize(np.load(path), (w, h), interpolation=kind, backend="cv2"))
    return out


def crop(spec: dict) -> list:
    cropper = TRANSFORMS.build(dict(type="RandomCrop", crop_size=tuple(spec["crop_size"]),
                                    cat_max_ratio=spec["cat_max_ratio"]))
    label = np.load(spec["label"])
    crops = []
    for entropy in spec["entropies"]:
        bridge_random(entropy)
        img = np.zeros(label.shape + (3,), np.uint8)
        crops.append(cropper(dict(img=img, gt_seg_map=label.copy(), seg_fields=["gt_seg_map"]))["gt_seg_map"])
    return crops


def pipeline(spec: dict) -> list:
    cfg = Config.fromfile(config_path("t"))
    steps = [t for t in cfg.train_pipeline if t["type"] != "PhotoMetricDistortion"]
    transforms = [TRANSFORMS.build(t) for t in steps]
    preprocessor = MODELS.build(cfg.data_preprocessor)
    samples = []
    for image_path, label_path, entropy in spec["samples"]:
        bridge_random(entropy)
        results = dict(img_path=image_path, seg_map_path=label_path, reduce_zero_label=True, seg_fields=[])
        for transform in transforms:
            results = transform(results)
        batch = preprocessor(dict(inputs=[results["inputs"]], data_samples=[results["data_samples"]]),
                             training=True)
        samples.append({"image": batch["inputs"][0].clone(),
                        "label": batch["data_samples"][0].gt_sem_seg.data[0].clone(),
                        "steps": [t["type"] for t in steps]})
    return samples


def main() -> None:
    job = json.load(open(sys.argv[1]))
    out: dict = {}
    if "reduce" in job:
        out["reduce"] = reduce_labels(job["reduce"])
    if "rescale" in job:
        out["rescale"] = [mmcv.rescale_size((w, h), tuple(scale)) for w, h, scale in job["rescale"]]
    if "resize" in job:
        out["resize"] = resize(job["resize"])
    if "crop" in job:
        out["crop"] = crop(job["crop"])
    if "pipeline" in job:
        out["pipeline"] = pipeline(job["pipeline"])
    torch.save(out, job["out"])


if __name__ == "__main__":
    main()
