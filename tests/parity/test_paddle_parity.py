"""segnext_hub against PaddleSeg 2.8.0 itself (PaddlePaddle 3.3.1, CPU), in its own virtualenv.

Evidence: every ``.pdparams`` here was built, filled with seeded random weights (calibrated BN
statistics, layer scales of trained magnitude), saved and run by real PaddleSeg
(tests/parity/paddle_worker.py); segnext_hub converts the file with its own reader and key map
and runs its own model. PaddleSeg's NMF draws bases with ``paddle.rand``; both sides are given
the same bases. fp32 on two frameworks: they agree within 1e-4, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segnext_hub
from segnext_hub.conversion.reading import read_checkpoint
from tests.parity.paddle_harness import make_paddle_file, require_paddle_env, run_paddle

pytestmark = pytest.mark.parity

ATOL = 1e-4
SHAPES = [(1, 3, 64, 64), (1, 3, 75, 103)]


def _inputs_and_bases(tmp_path, width: int = 256, rank: int = 16):
    rng = np.random.default_rng(11)
    inputs, bases = [], []
    for i, shape in enumerate(SHAPES):
        x = (rng.standard_normal(shape) * 1.5).astype("float32")
        b = rng.random((shape[0], width, rank)).astype("float32")
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        np.save(tmp_path / f"x{i}.npy", x)
        np.save(tmp_path / f"b{i}.npy", b)
        inputs.append(x)
        bases.append(b)
    return inputs, bases


def _paddle_outputs(tmp_path, variant, weights, backbone=False):
    result = run_paddle({"task": "forward", "variant": variant, "kind": "backbone" if backbone else "segmentor",
                         "weights": str(weights), "inputs": [str(tmp_path / f"x{i}.npy") for i in range(len(SHAPES))],
                         "bases": [str(tmp_path / f"b{i}.npy") for i in range(len(SHAPES))]}, tmp_path)
    assert (result["paddle"], result["paddleseg"]) == ("3.3.1", "2.8.0")
    return result["outputs"]


@pytest.mark.parametrize("variant", ["t", "s", "b", "l"])
def test_converted_paddleseg_segnext_matches_paddleseg(variant, tmp_path):
    require_paddle_env()
    source = make_paddle_file(tmp_path, variant, seed=ord(variant))
    inputs, bases = _inputs_and_bases(tmp_path)
    theirs = _paddle_outputs(tmp_path, variant, source)

    report = segnext_hub.convert(source, tmp_path / "ours.safetensors")
    assert report.detection["layout"] == "paddle" and report.detection["ham_channels"] == 256
    assert report.detection["md_r"] == 16 and report.verification["verified"]
    model = segnext_hub.load(tmp_path / "ours.safetensors")
    assert model.decode_head.ham_channels == 256 and model.segnext_config.ham_channels == 256
    with torch.no_grad():
        for x, b, ref in zip(inputs, bases, theirs):
            feats = model.backbone(torch.from_numpy(x))
            for level, (ours, path) in enumerate(zip(feats, ref["features"])):
                diff = (ours - torch.from_numpy(np.load(path))).abs().max().item()
                assert diff < ATOL, f"{variant} stage {level + 1}: {diff}"
            logits = model(torch.from_numpy(x), bases=torch.from_numpy(b))
            expected = torch.from_numpy(np.load(ref["logits"]))
            assert logits.shape == expected.shape
            diff = (logits - expected).abs().max().item()
            assert diff < ATOL, f"{variant} {x.shape}: logits differ by {diff} (scale {expected.abs().max():.2f})"
            assert expected.abs().max() > 0.5  # the comparison is not between two near-zero maps


def test_a_paddleseg_backbone_zip_matches_paddleseg(tmp_path):
    require_paddle_env()
    archive = make_paddle_file(tmp_path, "t", backbone=True, seed=3, zip_stem="mscan_t_imagenet_pretrained")
    inputs, _ = _inputs_and_bases(tmp_path)
    theirs = _paddle_outputs(tmp_path, "t", tmp_path / "t_backbone_3.pdparams", backbone=True)
    backbone = segnext_hub.load(archive)
    assert type(backbone).__name__ == "MSCAN"
    with torch.no_grad():
        for x, ref in zip(inputs, theirs):
            for ours, path in zip(backbone(torch.from_numpy(x)), ref["features"]):
                assert (ours - torch.from_numpy(np.load(path))).abs().max().item() < ATOL


def test_to_paddle_writes_a_file_paddleseg_loads_and_runs_the_same(tmp_path):
    """The way back: MMSeg names -> .pdparams, read by PaddleSeg's own load_entire_model."""
    require_paddle_env()
    source = make_paddle_file(tmp_path, "b", seed=9)
    segnext_hub.convert(source, tmp_path / "mmseg.pth")
    segnext_hub.convert(tmp_path / "mmseg.pth", tmp_path / "back.pdparams", to="paddle")
    original, back = read_checkpoint(source).obj, read_checkpoint(tmp_path / "back.pdparams").obj
    assert set(original) == set(back)
    assert all(torch.equal(original[k], back[k]) and original[k].shape == back[k].shape for k in original)
    _inputs_and_bases(tmp_path)
    first = [np.load(out["logits"]) for out in _paddle_outputs(tmp_path, "b", source)]
    again = [np.load(out["logits"]) for out in _paddle_outputs(tmp_path, "b", tmp_path / "back.pdparams")]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
