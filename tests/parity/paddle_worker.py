"""Runs inside the PaddleSeg 2.8.0 virtualenv (.venv-paddle); never imported by segnext_hub.

Usage: python paddle_worker.py JOB.json. It imports no torch: everything it hands back is a
``.npy`` file or a ``.pdparams`` file that PaddleSeg itself wrote.

Jobs (``job["task"]``):

- ``make``: PaddleSeg builds SegNeXt (``paddleseg.models.SegNeXt`` with ``MSCAN_{T,S,B,L}``
  and the ``decoder_cfg`` of PaddleSeg's own Cityscapes configs: channels 256, ham_channels
  256, MD_R 16) or a bare MSCAN, fills it with seeded random weights and realistic BatchNorm
  statistics (measured on the activations the weights produce, as ``random_init`` does on our
  side), saves ``model.pdparams`` with ``paddle.save(model.state_dict(), ...)`` as PaddleSeg's
  trainer does (``paddleseg/core/train.py``), and, with ``zip``, packs a backbone the way the
  ImageNet downloads are read (``<stem>/model.pdparams`` in ``<stem>.zip``).
- ``forward``: loads a ``.pdparams`` file through PaddleSeg's own ``load_entire_model`` and runs
  its forward on the given inputs (``.npy``) with the given NMF bases (``.npy``; PaddleSeg draws
  its own with ``paddle.rand``, so ``NMF2D._build_bases`` is replaced by one that returns
  them). It writes the four backbone outputs and the decode head's logits (at 1/8 size, before
  ``SegNeXt.forward`` upsamples them) as ``.npy`` files.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
import zipfile

warnings.filterwarnings("ignore")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddleseg.models import SegNeXt  # noqa: E402
from paddleseg.models.backbones import mscan  # noqa: E402
from paddleseg.models.layers import NMF2D  # noqa: E402
from paddleseg.utils import utils  # noqa: E402

BACKBONES = {"t": mscan.MSCAN_T, "s": mscan.MSCAN_S, "b": mscan.MSCAN_B, "l": mscan.MSCAN_L}
# configs/segnext/segnext_mscan_{t,s,b,l}_cityscapes_1024x1024_160k.yml, every size alike.
DECODER_CFG = {"channels": 256, "ham_channels": 256, "ham_kwargs": {"MD_R": 16}, "dropout_rate": 0.1,
               "align_corners": False}


def build(job: dict):
    backbone = BACKBONES[job["variant"]]()
    if job.get("kind", "segmentor") == "backbone":
        return backbone
    cfg = dict(DECODER_CFG)
    cfg["ham_channels"] = cfg["channels"] = job.get("ham_channels", 256)
    cfg["ham_kwargs"] = {"MD_R": job.get("md_r", 16)}
    return SegNeXt(backbone, cfg, num_classes=job.get("num_classes", 19))


def randomize(model, seed: int) -> None:
    """Seeded weights of trained-like magnitudes; BN statistics measured on real activations.

    Layer scales are drawn from [0.01, 0.1] (trained MSCAN layer scales sit around there; a
    1.0 would let 27 blocks of L grow the residual stream by orders of magnitude, where fp32
    rounding differences between two frameworks grow with it).
    """
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        shape = list(param.shape)
        if name.endswith(("layer_scale_1", "layer_scale_2")):
            value = rng.uniform(0.01, 0.1, shape)
        elif len(shape) == 1 and name.endswith("weight"):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:
            value = rng.uniform(-0.1, 0.1, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            gain = 0.5 if "spatial_gating_unit.conv_out" in name else 1.0
            value = rng.standard_normal(shape) * gain * (2.0 / fan_in) ** 0.5
        param.set_value(value.astype("float32"))
    norms = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.layer.norm._BatchNormBase)]
    for layer in norms:
        layer._momentum = 0.0  # running statistics := the calibration batch's
    model.train()
    backbone = getattr(model, "backbone", model)
    with paddle.no_grad():
        backbone(paddle.to_tensor(rng.standard_normal((2, 3, 96, 96)).astype("float32")))
    model.eval()


def make(job: dict) -> None:
    paddle.seed(job.get("seed", 0))
    model = build(job)
    randomize(model, job.get("seed", 0))
    out = job["out"]
    paddle.save(model.state_dict(), out)
    if job.get("zip"):
        stem = job["zip_stem"]
        with zipfile.ZipFile(job["zip"], "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(f"{stem}/"), b"")  # the first entry names the folder
            archive.write(out, f"{stem}/model.pdparams")


def forward(job: dict) -> None:
    model = build(job)
    utils.load_entire_model(model, job["weights"])
    model.eval()
    bases_iter = iter([np.load(path) for path in job.get("bases", [])])
    NMF2D._build_bases = lambda self, B, S, D, R: paddle.to_tensor(next(bases_iter))
    results = []
    with paddle.no_grad():
        for index, path in enumerate(job["inputs"]):
            x = paddle.to_tensor(np.load(path))
            backbone = getattr(model, "backbone", model)
            features = backbone(x)
            entry = {"features": []}
            for level, feat in enumerate(features):
                target = os.path.join(job["out_dir"], f"out{index}_feat{level}.npy")
                np.save(target, feat.numpy())
                entry["features"].append(target)
            if job.get("kind", "segmentor") == "segmentor":
                logits = model.decode_head(features)
                entry["logits"] = os.path.join(job["out_dir"], f"out{index}_logits.npy")
                np.save(entry["logits"], logits.numpy())
            results.append(entry)
    with open(os.path.join(job["out_dir"], "result.json"), "w") as handle:
        json.dump({"outputs": results, "paddle": paddle.__version__,
                   "paddleseg": __import__("paddleseg").__version__}, handle)


def main() -> None:
    with open(sys.argv[1]) as handle:
        job = json.load(handle)
    for one in job.get("jobs", [job]):  # several files in one process: paddle's import costs seconds
        {"make": make, "forward": forward}[one["task"]](one)


if __name__ == "__main__":
    main()
