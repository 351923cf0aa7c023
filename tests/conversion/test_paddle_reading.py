"""Paddle files as real PaddlePaddle writes them, read without importing paddle.

Evidence: ``tests/data/paddle/tiny_state.pdparams`` and ``tiny_backbone.zip`` were written by the
real ``paddle.save`` of PaddlePaddle 3.3.1 (numpy 1.26.4) through ``make_paddle_files.py`` beside
them, which also wrote ``expected.json`` from the layer itself (not from the file). The zips with
unexpected content below are built here from those real bytes. The reshape rule is checked on the
key map the project ships (``key_maps/paddle.yaml``) and on small maps written here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from segnext_hub.conversion.keymap import load_key_map, parse_key_map
from segnext_hub.conversion.reading import read_checkpoint
from segnext_hub.errors import BadInputError

DATA = Path(__file__).resolve().parents[1] / "data" / "paddle"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def _check_arrays(obj: dict) -> None:
    assert set(obj) == set(EXPECTED["arrays"])
    for key, want in EXPECTED["arrays"].items():
        tensor = obj[key]
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32, key
        assert list(tensor.shape) == want["shape"], key
        assert tensor.flatten().tolist() == pytest.approx(want["values"], abs=0), key


def test_a_pdparams_file_reads_as_its_arrays_without_the_name_table():
    checkpoint = read_checkpoint(DATA / "tiny_state.pdparams")
    assert checkpoint.format == "paddle-pdparams"
    assert "StructuredToParameterName@@" not in checkpoint.obj  # Paddle's name table is no weight
    _check_arrays(checkpoint.obj)


def test_the_real_file_does_hold_the_name_table_the_reader_drops():
    """Guards the test above: the table is in the bytes, mapping to Paddle's internal names."""
    raw = (DATA / "tiny_state.pdparams").read_bytes()
    assert b"StructuredToParameterName@@" in raw
    assert all(name.encode() in raw for name in EXPECTED["name_table"].values())


def test_a_paddleseg_backbone_zip_reads_as_its_model_pdparams():
    checkpoint = read_checkpoint(DATA / "tiny_backbone.zip")
    assert checkpoint.format == "paddle-zip"
    _check_arrays(checkpoint.obj)


def _zip(tmp_path: Path, members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> Path:
    path = tmp_path / "mscan_t_imagenet_pretrained.zip"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return path


PDPARAMS = (DATA / "tiny_state.pdparams").read_bytes()


@pytest.mark.parametrize("members, message", [
    ([("model.pdparams", PDPARAMS)], "zip does not start with a folder"),
    ([("d/", b""), ("d/model.pdparams", PDPARAMS), ("d/README.txt", b"hi")], "unexpected zip content"),
    ([("d/", b""), ("d/model.pdparams", PDPARAMS), ("e/model.pdparams", PDPARAMS)], "unexpected zip content"),
    ([("d/", b""), ("d/sub/model.pdparams", PDPARAMS)], "unexpected zip content"),
])
def test_a_zip_of_another_shape_is_refused_with_its_members(tmp_path, members, message):
    path = _zip(tmp_path, members)
    with pytest.raises(BadInputError, match=message) as caught:
        read_checkpoint(path)
    text = str(caught.value)
    assert "model.pdparams" in text and "one folder holding model.pdparams" in text
    assert "\n" not in text


def test_a_stored_zip_reads_too(tmp_path):
    path = _zip(tmp_path, [("d/", b""), ("d/model.pdparams", PDPARAMS)], method=zipfile.ZIP_STORED)
    _check_arrays(read_checkpoint(path).obj)


def test_a_corrupt_member_is_one_line_naming_the_file(tmp_path):
    path = _zip(tmp_path, [("d/", b""), ("d/model.pdparams", PDPARAMS)], method=zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    at = data.index(b"conv.weight")
    data[at] ^= 0xFF  # a flipped byte inside the stored member: its CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"mscan_t_imagenet_pretrained\.zip.*CRC|Bad CRC"):
        read_checkpoint(path)


def test_a_zip_whose_member_claims_more_than_the_read_may_cost_is_refused_before_inflating(tmp_path):
    path = _zip(tmp_path, [("d/", b""), ("d/model.pdparams", b"\0" * (300 << 20))])  # 300 MiB of zeros
    assert path.stat().st_size < 1 << 20
    with pytest.raises(BadInputError, match="inflated d/model.pdparams"):
        read_checkpoint(path)


# --------------------------------------------------------------------------- the reshape rule


def test_the_paddle_map_turns_layer_scales_into_vectors_and_back():
    state = {f"block1.0.{k}": v for k, v in read_checkpoint(DATA / "tiny_state.pdparams").obj.items()}
    key_map = load_key_map("paddle")
    mapped = key_map.apply(state)
    assert mapped.tensors["block1.0.layer_scale_1"].shape == (4,)
    assert mapped.reshaped == [("block1.0.layer_scale_1", (4, 1, 1), (4,))]
    assert set(mapped.tensors) >= {f"block1.0.bn.{k}" for k in ("running_mean", "running_var", "num_batches_tracked")}
    back = key_map.inverted().apply(mapped.tensors)
    assert set(back.tensors) == set(state)
    assert all(torch.equal(back.tensors[k], state[k]) and back.tensors[k].shape == state[k].shape for k in state)


def test_a_layer_scale_of_an_unexpected_shape_is_bad_input():
    key_map = load_key_map("paddle")
    with pytest.raises(BadInputError, match=r"block1\.0\.layer_scale_1 has shape \(4,\), expected \(C, 1, 1\)"):
        key_map.apply({"block1.0.layer_scale_1": torch.ones(4)})


@pytest.mark.parametrize("spec", ["[1, 1]", "[-1, -1]", "[-1, 0]", "'C'", "[-1, 1.5]"])
def test_a_reshape_rule_needs_exactly_one_free_size(spec):
    text = f"name: x\nrules:\n  - reshape:\n      key: '{{k}}.s'\n      from: {spec}\n      to: [-1]\n"
    with pytest.raises(BadInputError, match="exactly one -1"):
        parse_key_map(text)


def test_renames_of_the_paddle_map_are_those_read_in_paddleseg():
    """A few names PaddleSeg 2.8.0's mscan.py / segnext.py / layer_libs.py give, and MMSeg's for them."""
    key_map = load_key_map("paddle")
    one = torch.zeros(1)
    paddle_names = {
        "backbone.block1.0.attn.spatial_gating_unit.dwconvs.0.conv1_1.weight": "backbone.block1.0.attn.spatial_gating_unit.conv0_1.weight",
        "backbone.block1.0.attn.spatial_gating_unit.dwconvs.2.conv3_2.bias": "backbone.block1.0.attn.spatial_gating_unit.conv2_2.bias",
        "backbone.block1.0.attn.spatial_gating_unit.conv_out.weight": "backbone.block1.0.attn.spatial_gating_unit.conv3.weight",
        "backbone.patch_embed1.proj.1._variance": "backbone.patch_embed1.proj.1.running_var",
        "decode_head.squeeze._conv.weight": "decode_head.squeeze.conv.weight",
        "decode_head.hamburger.ham_out._group_norm.bias": "decode_head.hamburger.ham_out.gn.bias",
        "decode_head.hamburger.ham_in.weight": "decode_head.hamburger.ham_in.conv.weight",
        "decode_head.conv_seg.weight": "decode_head.conv_seg.weight",
        "backbone.block1.0.mlp.dwconv.weight": "backbone.block1.0.mlp.dwconv.weight",
    }
    mapped = key_map.apply({name: one for name in paddle_names})
    assert set(mapped.tensors) == set(paddle_names.values()) | {"backbone.patch_embed1.proj.1.num_batches_tracked"}
    back = key_map.inverted().apply({name: one for name in paddle_names.values()})
    assert set(back.tensors) == set(paddle_names)


def test_head_classifier_of_a_backbone_is_dropped():
    mapped = load_key_map("paddle").apply({"head.weight": torch.zeros(2, 2), "norm1.weight": torch.ones(2)})
    assert set(mapped.tensors) == {"norm1.weight"}
    assert mapped.dropped == [("head.weight", "ImageNet classifier, not part of a segmentation backbone")]
