"""The record read from the containers the runners write, carried through a converted file.

Evidence: self-written fixtures shaped like real mmcv 1.x / MMEngine checkpoints
(tests/helpers/factory.py, checked against real mmengine in tests/parity/test_containers.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from segnext_hub.conversion.converter import artifact_record, convert
from segnext_hub.conversion.reading import read_checkpoint
from segnext_hub.conversion.record import read_metadata_record
from segnext_hub.errors import BadInputError
from segnext_hub.datasets import get_dataset, label_space, own_label_space
from tests.helpers import factory


def test_mmengine_container_record_with_message_hub_only(tmp_path):
    state = factory.mmseg_state("t", num_classes=150)
    checkpoint = factory.mmengine_checkpoint(state, md_r=32, seed=9)
    del checkpoint["meta"]  # what survives in message_hub.runtime_info is enough
    record = artifact_record(read_checkpoint(factory.save(checkpoint, tmp_path / "c.pth")))
    assert (record.md_r, record.md_r_source) == (32, "checkpoint message_hub.runtime_info.cfg")
    assert (record.seed, record.seed_source) == (9, "checkpoint message_hub.runtime_info.seed")
    assert record.classes == get_dataset("ade20k").classes


def test_mmcv_official_b_without_ham_kwargs_and_the_safetensors_round_trip(tmp_path):
    state = factory.mmseg_state("b", seed=1, num_classes=19)
    src = factory.write_official(tmp_path / "b.pth", state, seed=31)  # official B: no ham_kwargs
    assert "ham_kwargs" not in torch.load(src, weights_only=False)["meta"]["config"]
    report = convert(src, tmp_path / "b.safetensors")
    assert report.record["md_r"] == 64 and report.record["training_seed"] == 31
    assert report.record["classes"] is None  # Cityscapes' own names: nothing extra to keep
    with safe_open(str(tmp_path / "b.safetensors"), "pt") as handle:
        meta = handle.metadata()
    again = read_metadata_record(meta)
    assert (again.md_r, again.seed) == (64, 31)
    assert again.md_r_source == ("safetensors metadata (checkpoint meta.config (LightHamHead without MD_R: "
                                 "code default 64))")
    back = convert(tmp_path / "b.safetensors", tmp_path / "back.pth", to="official")
    assert (back.record["md_r"], back.record["training_seed"]) == (64, 31)
    assert read_metadata_record({"architecture": "other", "md_r": "3"}).md_r is None
    with pytest.raises(BadInputError, match="md_r 'x' is not readable"):
        read_metadata_record({"architecture": "segnext", "variant": "t", "md_r": "x", "classes": "[1]"})
    with pytest.raises(BadInputError, match="md_r 1000000 must be an integer in 1..1024"):
        read_metadata_record({"architecture": "segnext", "variant": "t", "num_classes": "150", "md_r": "1000000"})


def test_label_space_prefers_the_record_that_fits_the_head():
    ade = get_dataset("ade20k")
    assert label_space(150, "ade20k").classes == ade.classes
    assert label_space(150, "ade20k", ["x"] * 3).classes == ade.classes  # does not fit: ignored
    own = label_space(3, None, ["a", "b", "c"], [[1, 2, 3]] * 3)
    assert own.classes == ("a", "b", "c") and own.palette == ((1, 2, 3),) * 3
    assert label_space(3, "unknown").classes == ("class_0", "class_1", "class_2")
    assert own_label_space(150, "ade20k", ade.classes, ade.palette) == (None, None)
    assert json.dumps(own_label_space(3, None, ["a", "b", "c"], None)[0]) == '["a", "b", "c"]'
