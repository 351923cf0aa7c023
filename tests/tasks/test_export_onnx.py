"""ONNX export of SegNeXt-T (random weights, 64x64): bases as input or constant, dynamic axes,
the check in onnxruntime and its failure path."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from segnext_hub import create_model, get_variant  # noqa: E402
from segnext_hub.errors import BadInputError, VerificationError  # noqa: E402
from segnext_hub.models.random_init import randomize_  # noqa: E402
from segnext_hub.tasks import export_onnx as ex  # noqa: E402

FAST = "torchscript"  # ~1 s per export here; the default dynamo path gets one test of its own


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here; see conftest


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("t"), seed=0, calibration_size=32, calibration_batches=1)


def _bases(n, seed):
    """What the NMF expects, drawn here independently: uniform, L2-normalised over D (T: 256x16)."""
    return F.normalize(torch.rand((n, 256, 16), generator=torch.Generator().manual_seed(seed)), dim=1)


def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _run(path, **feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]


def test_bases_as_input_static(model, tmp_path):
    out = tmp_path / "t.onnx"
    model.train()
    try:
        report = ex.export_onnx(model, out, size=(64, 64), exporter=FAST)
        assert model.training  # exported from a copy in eval mode; the caller's module is untouched
    finally:
        model.eval()
    assert report.checked and report.max_abs_diff <= report.tolerance == 1e-4
    assert report.inputs == {"image": [1, 3, 64, 64], "bases": [1, 256, 16]}
    assert report.outputs == {"logits": [1, 150, 8, 8]} and report.bases_seed is None
    assert not _ops(out) & ex.RANDOM_OPS
    json.dumps(report.to_dict())
    # Fresh input and bases, checked here against PyTorch.
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    b1, b2 = _bases(1, 1), _bases(1, 2)
    with torch.no_grad():
        ref1, ref2 = model(x, bases=b1).numpy(), model(x, bases=b2).numpy()
    got1, got2 = _run(out, image=x, bases=b1), _run(out, image=x, bases=b2)
    assert np.abs(got1 - ref1).max() < 1e-4 and np.abs(got2 - ref2).max() < 1e-4
    assert np.abs(got1 - got2).max() > 1e-3  # the bases really are an input


def test_constant_bases_with_dynamic_axes(model, tmp_path):
    out = tmp_path / "c.onnx"
    report = ex.export_onnx(model, out, size=(64, 64), bases="constant", bases_seed=11, dynamic=True, exporter=FAST)
    assert report.bases_seed == 11 and list(report.inputs) == ["image"]
    assert report.inputs["image"] == ["batch", 3, "height", "width"]
    assert [c["shape"] for c in report.checks] == [[1, 3, 64, 64], [2, 3, 96, 128]]
    stored = _bases(1, 11)  # torch.Generator().manual_seed(11), as documented
    for shape in [(2, 3, 96, 64), (1, 3, 72, 40)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x, bases=stored.repeat(shape[0], 1, 1)).numpy()
        got = _run(out, image=x)
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


@pytest.mark.skipif(not ex.dynamo_available(), reason="dynamo exporter needs torch >= 2.5 and onnxscript")
def test_default_dynamo_exporter_dynamic_bases_input(tmp_path):
    # torch.export's cost grows with the op count: T's layout with one block per stage.
    slim = randomize_(create_model(replace(get_variant("t"), depths=(1, 1, 1, 1))), seed=1,
                      calibration_size=32, calibration_batches=1)
    out = tmp_path / "d.onnx"
    report = ex.export_onnx(slim, out, size=(64, 64), dynamic=True)
    assert report.exporter == "dynamo" and report.fallback_reason is None and report.opset >= 18
    assert report.inputs["image"] == ["batch", 3, "height", "width"]
    assert report.inputs["bases"] == ["batch", 256, 16]
    assert not _ops(out) & ex.RANDOM_OPS
    x, b = torch.randn(2, 3, 96, 64), _bases(2, 3)
    with torch.no_grad():
        ref = slim(x, bases=b).numpy()
    got = _run(out, image=x, bases=b)  # a second size and batch in the saved, self-contained file
    assert got.shape == (2, 150, 12, 8) and np.abs(got - ref).max() < 1e-4


def test_over_tolerance_fails_and_writes_nothing(model, tmp_path, monkeypatch):
    real = ex.run_onnx
    monkeypatch.setattr(ex, "run_onnx", lambda path, feeds: real(path, feeds) + 1e-3)
    out = tmp_path / "bad.onnx"
    with pytest.raises(VerificationError, match="tolerance") as err:
        ex.export_onnx(model, out, size=(64, 64), exporter=FAST)
    assert err.value.exit_code == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_argument_errors_write_nothing(model, tmp_path):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"old")
    with pytest.raises(BadInputError, match="already exists"):
        ex.export_onnx(model, out, size=(64, 64), exporter=FAST)
    assert out.read_bytes() == b"old"
    for kwargs, match in [({"bases": "random"}, "bases"), ({"size": (16, 64)}, "at least"),
                          ({"exporter": "tf"}, "exporter")]:
        with pytest.raises(BadInputError, match=match):
            ex.export_onnx(model, tmp_path / "y.onnx", **kwargs)
    with pytest.raises(BadInputError, match=".onnx"):
        ex.export_onnx(model, tmp_path / "y.bin", size=(64, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]


def test_export_reports_its_steps(model, tmp_path, caplog):
    """Issue 20: a minute-long export was silent. Each step is a log line and, when shown, a bar."""
    import io
    import logging
    import sys

    err = io.StringIO()
    caplog.set_level(logging.INFO, logger="segnext_hub.tasks.export_onnx")
    old, sys.stderr = sys.stderr, err
    try:
        ex.export_onnx(model, tmp_path / "t.onnx", size=(64, 64), exporter=FAST, progress=True)
    finally:
        sys.stderr = old
    steps = [r.getMessage() for r in caplog.records if r.name == "segnext_hub.tasks.export_onnx"]
    assert [s.split(" ")[1] for s in steps] == ["tracing", "checking", "writing"], steps
    assert "export: writing" in err.getvalue() and "3/3" in err.getvalue()
