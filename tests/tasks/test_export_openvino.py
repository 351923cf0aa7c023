"""OpenVINO IR export and NNCF int8, against the real OpenVINO 2026.4 / NNCF 3.4 packages.

Evidence: the IR written to disk is read back and run by OpenVINO's own CPU plugin and
compared with PyTorch on fresh inputs and bases; quantized graphs are inspected node by
node (which ops read FakeQuantize outputs). The agreement test runs on a model fine-tuned
here, through the project's training path, on a generated dataset, so its logits are not
near-tied. These tests need `.venv-openvino` (`make test-openvino`, run by `make test`);
anywhere else they skip and say so (and fail under SEGNEXT_REQUIRE_OPENVINO=1).
"""

from __future__ import annotations

import importlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segnext_hub import create_model
from segnext_hub.errors import BadInputError, VerificationError
from segnext_hub.models.random_init import randomize_

pytestmark = [pytest.mark.openvino, pytest.mark.usefixtures("one_torch_thread")]


def _require(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("SEGNEXT_REQUIRE_OPENVINO"):
            pytest.fail(f"{name} is missing in the OpenVINO test venv (make openvino-venv)")
        pytest.skip(f"{name} is not installed here; the OpenVINO tests run in .venv-openvino "
                    "(`make test-openvino`, part of `make test`)", allow_module_level=True)


ov = _require("openvino")
nncf = _require("nncf")

from benchmarks import toy_finetune  # noqa: E402
from segnext_hub.tasks import export_openvino as ex  # noqa: E402
from segnext_hub.tasks import quantize as q  # noqa: E402

SIZE = (64, 64)


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("t"), seed=0, calibration_size=32, calibration_batches=1)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """Generated images with classes (discs, boxes, stripes on textured backgrounds), 64x64."""
    return toy_finetune.make_dataset(tmp_path_factory.mktemp("toy"), count=20, size=64, seed=3)


def _bases(n, seed):
    """What the NMF expects, drawn here independently: uniform, L2-normalised over D (T: 256x16)."""
    return F.normalize(torch.rand((n, 256, 16), generator=torch.Generator().manual_seed(seed)), dim=1)


def _run(path, **feeds):
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({k: v.numpy() for k, v in feeds.items()})["logits"]


def _reads_fake_quantize(op) -> bool:
    return any(v.get_node().get_type_name() == "FakeQuantize" for v in op.input_values())


def test_fp32_ir_with_bases_input_matches_pytorch(model, tmp_path):
    out = tmp_path / "t.xml"
    report = ex.export_openvino(model, out, size=SIZE)
    assert report.checked and report.max_abs_diff <= report.tolerance == 1e-4
    assert report.inputs == {"image": ["batch", 3, 64, 64], "bases": ["batch", 256, 16]}
    assert report.outputs == {"logits": ["batch", 150, 8, 8]} and report.precision == "fp32"
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert report.size_bytes == out.stat().st_size + out.with_suffix(".bin").stat().st_size
    json.dumps(report.to_dict())
    meta = ex.read_metadata(out)
    assert meta["bases"] == "input" and meta["num_classes"] == "150" and meta["precision"] == "fp32"
    # Fresh input and two different bases, run from the file on disk; batch 2 works too.
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    b1, b2 = _bases(2, 1), _bases(2, 2)
    with torch.no_grad():
        ref1, ref2 = model(x, bases=b1).numpy(), model(x, bases=b2).numpy()
    got1, got2 = _run(out, image=x, bases=b1), _run(out, image=x, bases=b2)
    assert np.abs(got1 - ref1).max() < 1e-4 and np.abs(got2 - ref2).max() < 1e-4
    assert np.abs(got1 - got2).max() > 1e-3  # the bases really are an input


def test_constant_bases_with_dynamic_sizes(model, tmp_path):
    out = tmp_path / "c.xml"
    report = ex.export_openvino(model, out, size=SIZE, bases="constant", bases_seed=11, dynamic=True)
    assert report.bases_seed == 11 and list(report.inputs) == ["image"]
    assert report.inputs["image"] == ["batch", 3, "height", "width"]
    assert report.outputs["logits"] == ["batch", 150, "height_8", "width_8"]
    assert [c["shape"] for c in report.checks] == [[1, 3, 64, 64], [2, 3, 96, 128]]
    assert ex.read_metadata(out)["bases_seed"] == "11"
    stored = _bases(1, 11)  # torch.Generator().manual_seed(11), as documented
    for shape in [(2, 3, 96, 64), (1, 3, 72, 40)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x, bases=stored.repeat(shape[0], 1, 1)).numpy()
        assert np.abs(_run(out, image=x) - ref).max() < 1e-4


def test_failed_check_writes_nothing(model, tmp_path):
    out = tmp_path / "t.xml"
    with pytest.raises(VerificationError, match="not written"):
        ex.export_openvino(model, out, size=SIZE, tolerance=1e-12)  # the real difference is ~1e-6
    assert list(tmp_path.iterdir()) == []  # no .xml, no .bin, no temp folder


def test_refusals_before_any_work(model, tmp_path):
    (tmp_path / "one").mkdir()
    toy_finetune.make_dataset(tmp_path / "one", count=1, size=64)
    cases = [
        (dict(out_path=tmp_path / "t.onnx"), "should end in .xml"),
        (dict(out_path=tmp_path / "t.xml", int8=True), "--calib"),
        (dict(out_path=tmp_path / "t.xml", calib=tmp_path), "only used with int8"),
        (dict(out_path=tmp_path / "t.xml", int8=True, calib=tmp_path / "missing"), "does not exist"),
        (dict(out_path=tmp_path / "t.xml", int8=True, calib=tmp_path / "one"), "at least 2"),  # labels/ not counted
        (dict(out_path=tmp_path / "t.xml", bases="random"), "bases must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(BadInputError, match=message):
            ex.export_openvino(model, size=SIZE, **kwargs)
    (tmp_path / "t.bin").write_bytes(b"someone else's weights")
    with pytest.raises(BadInputError, match="exists"):
        ex.export_openvino(model, tmp_path / "t.xml", size=SIZE)
    assert (tmp_path / "t.bin").read_bytes() == b"someone else's weights"


def test_int8_keeps_the_whole_nmf_in_float(model, toy_data, tmp_path):
    out = tmp_path / "q.xml"
    report = ex.export_openvino(model, out, size=SIZE, int8=True, calib=toy_data / "images", measure_speed=False)
    quant = report.quantization
    assert report.precision == "int8" and report.max_abs_diff <= 1e-4  # the fp32 graph was checked first
    assert quant["calibration_images"] == 15 and quant["held_out_images"] == 5
    assert {"MatMul", "Multiply", "Divide", "Softmax"} <= set(quant["float_nmf_op_types"])
    assert quant["ops_reading_int8"]["Convolution"] > 0 and quant["ops_reading_int8"]["GroupConvolution"] > 0
    graph = ov.Core().read_model(str(out))  # the file on disk, not the in-memory graph
    nmf = [op for op in graph.get_ordered_ops() if q.NMF_SCOPE in op.get_friendly_name()]
    computing = [op for op in nmf if op.get_type_name() not in ("Constant", "FakeQuantize")]
    assert len(computing) == quant["float_nmf_nodes"] and not any(_reads_fake_quantize(op) for op in computing)
    # The one quantizer under the NMF's name sits on its output: ham_out's (int8) convolution input.
    (fq,) = [op for op in nmf if op.get_type_name() == "FakeQuantize"]
    assert fq.input_value(0).get_node().get_friendly_name().endswith("aten::view/Reshape_1")
    assert {t.get_node().get_type_name() for t in fq.output(0).get_target_inputs()} == {"Convolution"}
    assert sum(op.get_type_name() == "FakeQuantize" for op in graph.get_ordered_ops()) > 50
    assert 0.0 <= quant["argmax_agreement"] <= 1.0 and quant["agreement_pixels"] == 5 * 8 * 8
    assert ex.read_metadata(out)["precision"] == "int8"


def test_ignoring_only_the_nmf_matmuls_still_quantizes_its_updates(model, toy_data):
    """Why the whole subgraph is ignored (UPSTREAM.md): NNCF's own choice with MatMuls only."""
    graph = ex._convert(ov, ex._WithBasesInput(model).eval(), model, SIZE, "input", False)
    matmuls = [n for n in q.nmf_node_names(graph) if q.model_op_type(graph, n) == "MatMul"]
    samples = [q.preprocess(p, SIZE) for p in sorted((toy_data / "images").glob("*.png"))[:3]]
    with ex._quiet_nncf():
        quantized = nncf.quantize(graph, nncf.Dataset(range(3), lambda i: {
            "image": samples[i].image, "bases": _bases(1, i).numpy()}), subset_size=3,
            ignored_scope=nncf.IgnoredScope(names=matmuls))
    leaked = q.fake_quantized_nmf_nodes(quantized)
    types = {q.model_op_type(quantized, n) for n in leaked}
    assert leaked and types & {"Multiply", "Divide"}, types


def test_min_agreement_refuses_and_writes_nothing(model, toy_data, tmp_path, monkeypatch):
    monkeypatch.setattr(q, "argmax_agreement", lambda *a, **k: (0.5, 100))
    with pytest.raises(VerificationError, match="below --min-agreement"):
        ex.export_openvino(model, tmp_path / "q.xml", size=SIZE, int8=True, calib=toy_data / "images",
                           min_agreement=0.9, measure_speed=False)
    assert list(tmp_path.iterdir()) == []


def test_int8_agrees_with_fp32_on_a_confident_model(toy_data, tmp_path):
    """A model fine-tuned here (project training path, 60 iterations) predicts with confidence;
    int8 with the NMF in float must keep >= 95% of its argmax on held-out images."""
    tuned = toy_finetune.finetune(toy_data, iters=60, batch_size=4, crop=64, seed=0)
    assert toy_finetune.pixel_accuracy(tuned, toy_data, range(15, 20), size=64) > 0.8  # it learnt something
    report = ex.export_openvino(tuned, tmp_path / "q.xml", size=SIZE, int8=True, calib=toy_data / "images",
                                min_agreement=0.95, measure_speed=False)
    assert report.quantization["argmax_agreement"] >= 0.95


def test_cli_exports_openvino(tmp_path):
    from click.testing import CliRunner

    from segnext_hub.cli.hub import main as hub_cli
    from segnext_hub.training import save_checkpoint

    weights = save_checkpoint(tmp_path / "t.safetensors", create_model("t", num_classes=4, md_r=16))
    runner = CliRunner()
    result = runner.invoke(hub_cli, ["export", str(weights), str(tmp_path / "t.xml"), "--size", "64", "64",
                                     "--dynamic", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["precision"] == "fp32" and report["max_abs_diff"] <= 1e-4
    assert report["inputs"]["image"] == ["batch", 3, "height", "width"]
    result = runner.invoke(hub_cli, ["export", str(weights), str(tmp_path / "t.xml")])
    assert result.exit_code == 2 and "exists" in result.stderr and len(result.stderr.splitlines()) == 1
