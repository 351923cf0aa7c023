"""The decode head's width is data: read from the file, recorded, and flagged for MMSeg users.

Evidence: models built by the package's own create_model (ham_channels=256 is what PaddleSeg's
configs give B and L; the parity suite checks real PaddleSeg files end to end) and the
converter's outputs read back with the safetensors library and torch.load.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import segnext_hub
from segnext_hub.errors import BadInputError
from segnext_hub.models.factory import build_model
from segnext_hub.models.random_init import randomize_


def _save(tmp_path, variant, width, name="src.pth"):
    model = randomize_(build_model(variant, num_classes=19, md_r=16, ham_channels=width), seed=1)
    path = tmp_path / name
    torch.save({"state_dict": model.state_dict()}, path)
    return model, path


def test_a_narrow_b_head_converts_loads_and_says_mmseg_configs_will_not_load_it(tmp_path):
    model, src = _save(tmp_path, "b", 256)
    report = segnext_hub.convert(src, tmp_path / "out.safetensors")
    assert report.detection["ham_channels"] == 256
    assert "512 wide in MMSeg" in report.detection["sources"]["ham_channels"]
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["ham_channels"] == "256" and "will not load" in meta["ham_channels_note"]
    segnext_hub.convert(src, tmp_path / "out.pth")
    saved = torch.load(tmp_path / "out.pth", weights_only=True)
    assert "will not load" in saved["meta"]["segnext_hub"]["ham_channels_note"]
    loaded = segnext_hub.load(tmp_path / "out.safetensors")
    assert loaded.decode_head.ham_channels == 256 and loaded.segnext_config.ham_channels == 256
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, generator=torch.Generator().manual_seed(0)),
                           loaded(x, generator=torch.Generator().manual_seed(0)))


def test_the_variants_own_width_carries_no_note(tmp_path):
    _, src = _save(tmp_path, "t", 256)
    segnext_hub.convert(src, tmp_path / "out.safetensors")
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as handle:
        meta = handle.metadata()
    assert meta["ham_channels"] == "256" and "ham_channels_note" not in meta


def test_a_head_whose_classifier_reads_another_width_is_bad_input(tmp_path):
    model = build_model("t", num_classes=19)
    state = model.state_dict()
    state["decode_head.conv_seg.weight"] = torch.zeros(19, 128, 1, 1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(BadInputError, match="width 256 feeds a classifier of 128 channels"):
        segnext_hub.convert(tmp_path / "odd.pth", tmp_path / "out.safetensors")


@pytest.mark.parametrize("width", [0, 100, -32, True])
def test_create_model_refuses_a_width_groupnorm_cannot_split(width):
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("t", ham_channels=width)
