"""segnext-hub predict / eval / export and make demo's pipeline, end to end on generated weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segnext_hub.cli.hub import main as hub_cli
from segnext_hub.tasks.demo import sample_image


def cli(*args: str):
    result = CliRunner().invoke(hub_cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_predict_writes_masks_in_the_dataset_palette(mirror, tmp_path):
    mirror.serve("mscan-t")
    img = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(img)
    code, out, err = cli("predict", "mscan-t", img, sample_image(), "-o", tmp_path / "out", "-q")
    assert code == 0, err
    assert out.split() == [str(tmp_path / "out" / "photo_color.png"), str(tmp_path / "out" / "rocket_color.png")]
    classes = np.array(Image.open(tmp_path / "out" / "photo_classes.png"))
    color = np.array(Image.open(tmp_path / "out" / "photo_color.png"))
    assert classes.shape == (70, 90) and color.shape == (70, 90, 3)
    assert classes.max() < 150
    from segnext_hub.datasets import get_palette
    assert np.array_equal(color, get_palette("ade20k")[classes])
    assert np.array(Image.open(tmp_path / "out" / "rocket_overlay.png")).shape == (427, 640, 3)
    # the default seed makes runs repeatable
    code, _, _ = cli("predict", "mscan-t", img, "-o", tmp_path / "again", "-q")
    assert np.array_equal(np.array(Image.open(tmp_path / "again" / "photo_classes.png")), classes)


def test_predict_errors_are_one_line(mirror, tmp_path):
    code, _, err = cli("predict", "mscan-t", tmp_path / "nope.png", "-o", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    (tmp_path / "bad.png").write_bytes(b"not an image")
    mirror.serve("mscan-t")
    assert cli("pull", "-q", "mscan-t")[0] == 0  # its hash warning is not under test here
    code, _, err = cli("predict", "mscan-t", tmp_path / "bad.png", "-o", tmp_path / "o", "-q")
    assert code == 2 and "cannot read image" in err and err.count("\n") == 1
    code, _, err = cli("predict", "mscan-t", sample_image(), "-o", tmp_path / "o", "--device", "cuda:7")
    if code != 0:
        assert code == 2 and "cuda" in err.lower()


def test_demo_runs_the_loopback_pipeline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGNEXT_HUB_")}
    proc = subprocess.run([sys.executable, "-m", "segnext_hub.tasks.demo", "--out", str(tmp_path), "--loopback"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[loopback, random weights]" in proc.stdout and "conversion verified: True" in proc.stdout
    for kind in ("classes", "color", "overlay"):
        assert (tmp_path / f"rocket_{kind}.png").is_file()
    assert (tmp_path / "loopback-cache" / "mscan-t" / "manifest.json").is_file()


def test_eval_cli_json_and_training_seed_default(mirror, tmp_path):
    from tests.tasks.test_evaluate import make_ade

    make_ade(tmp_path / "data", np.random.default_rng(0), sizes=[(40, 52), (36, 30)])
    mirror.serve("mscan-t")
    code, out, err = cli("eval", "mscan-t", tmp_path / "data", "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "ade20k" and result["num_images"] == 2
    assert len(result["per_class"]) == 150 and 0 <= result["aAcc"] <= 100
    code, out, _ = cli("eval", "mscan-t", tmp_path / "data", "-q")
    assert code == 0 and "seed: 1234" in out  # the training log's seed (tests/helpers/mirror.py)
    code, _, err = cli("eval", "mscan-t", tmp_path, "-q")
    assert code == 2 and err.count("\n") == 1


def test_export_cli_checks_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from segnext_hub.conversion.converter import convert
    from tests.helpers import factory

    factory.write_mmseg(tmp_path / "t.pth", factory.mmseg_state("t", seed=0))
    convert(tmp_path / "t.pth", tmp_path / "t.safetensors", verify=False)
    code, out, err = cli("export", tmp_path / "t.safetensors", tmp_path / "t.onnx", "--size", "64", "64",
                         "--bases", "constant", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["checked"] and report["max_abs_diff"] <= report["tolerance"]
    assert (tmp_path / "t.onnx").stat().st_size == report["size_bytes"]
    code, _, err = cli("export", tmp_path / "t.safetensors", tmp_path / "t.onnx")
    assert code == 2 and "exists" in err


def test_export_openvino_refusals_are_one_line(tmp_path):
    """Where OpenVINO is not installed (the main venv), --format openvino says how to get it,
    before any model is loaded; int8 options refuse the ONNX format. Exit 2, nothing written."""
    import importlib.util

    code, _, err = cli("export", "no-such-model", tmp_path / "t.onnx", "--int8", "--calib", tmp_path)
    assert code == 2 and "--format openvino" in err and len(err.splitlines()) == 1
    code, _, err = cli("export", "no-such-model", tmp_path / "t.xml", "--calib", tmp_path)
    assert code == 2 and "--calib is only used with --int8" in err
    if importlib.util.find_spec("openvino") is None:
        code, _, err = cli("export", "no-such-model", tmp_path / "t.xml")
        assert code == 2 and "pip install 'segnext-hub[openvino]'" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_predict_fast_agrees_with_exact(mirror, tmp_path):
    import segnext_hub
    from segnext_hub.models.fused.model import FusedSegNeXt

    mirror.serve("mscan-t")
    assert isinstance(segnext_hub.load("mscan-t", fast=True), FusedSegNeXt)
    img = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(img)
    assert cli("predict", "mscan-t", img, "-o", tmp_path / "exact", "-q")[0] == 0
    code, _, err = cli("predict", "mscan-t", img, "-o", tmp_path / "fast", "-q", "--fast")
    assert code == 0, err
    exact = np.array(Image.open(tmp_path / "exact" / "p_classes.png"))
    fast = np.array(Image.open(tmp_path / "fast" / "p_classes.png"))
    assert (exact == fast).mean() >= 0.999
