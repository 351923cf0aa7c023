"""``ArtifactConfig``: one typed config, its two written forms, and the files earlier
versions wrote.

Evidence: the fixtures in tests/data/configs/ were written by segnext-hub 0.1.0's own code
(commit 21bd0c2, before this class existed: ``hub.config.make_config`` for config.json,
``converter.output_metadata`` and ``training.save_checkpoint`` for safetensors headers),
so they are the real earlier forms, not a recollection of them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file

import segnext_hub
from segnext_hub.config import ArtifactConfig, read_config_file
from segnext_hub.errors import BadInputError
from tests.helpers import factory

FIXTURES = Path(__file__).resolve().parent / "data" / "configs"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_old_config_json_files_read_and_round_trip():
    pulled = ArtifactConfig.from_json(fixture("config_pull_v0.1.json"))
    assert (pulled.name, pulled.variant, pulled.num_classes, pulled.md_r) == ("mscan-t", "t", 150, 16)
    assert pulled.resize_scale == (2048, 512) and pulled.test_mode == "whole"
    assert (pulled.training_seed, pulled.training_seed_source) == (1234, "checkpoint meta.seed")
    assert pulled.source_url.endswith("05bd8466.pth")
    local = ArtifactConfig.from_json(fixture("config_local_v0.1.json"))
    for config in (pulled, local):
        assert ArtifactConfig.from_json(config.to_json()) == config
        assert ArtifactConfig.from_metadata(config.to_metadata()) == config


def test_old_safetensors_metadata_reads():
    converted = ArtifactConfig.from_metadata(fixture("metadata_convert_v0.1.json"))
    assert (converted.variant, converted.num_classes, converted.md_r, converted.training_seed) == ("t", 150, 16, 1234)
    assert converted.md_r_source == "checkpoint meta.config (ham_kwargs MD_R=16)"
    trained = ArtifactConfig.from_metadata(fixture("metadata_checkpoint_v0.1.json"))
    assert trained.classes == ("c0", "c1", "c2", "c3", "c4") and len(trained.palette) == 5
    backbone = ArtifactConfig.from_metadata(fixture("metadata_backbone_checkpoint_v0.1.json"))
    assert backbone.is_backbone and backbone.variant == "s" and backbone.md_r is None
    assert ArtifactConfig.from_metadata({"format": "pt"}) is None  # someone else's file


def test_an_old_cache_folder_and_an_old_header_still_load(tmp_path):
    """Weights made now, config.json / header exactly as 0.1.0 wrote them."""
    state = factory.mmseg_state("t")
    folder = tmp_path / "mscan-t"
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    shutil.copy(FIXTURES / "config_pull_v0.1.json", folder / "config.json")
    model = segnext_hub.load(folder)
    assert isinstance(model.segnext_config, ArtifactConfig) and model.segnext_config.training_seed == 1234
    save_file(state, tmp_path / "old.safetensors", metadata=fixture("metadata_convert_v0.1.json"))
    assert segnext_hub.load(tmp_path / "old.safetensors").segnext_config.md_r == 16


@pytest.mark.parametrize("change, message", [
    ({"md_r": 10**6}, "md_r 1000000 must be an integer in 1..1024"),
    ({"num_classes": 0}, "num_classes 0 must be an integer"),
    ({"num_classes": True}, "num_classes True must be an integer"),
    ({"variant": "xl"}, "variant 'xl' must be one of t, s, b, l"),
    ({"test_crop_size": [1, 1]}, "test_crop_size .* must be two integers in 32..8192"),
    ({"resize_scale": [100000, 512]}, "resize_scale"),
    ({"palette": [[0, 0, 256]] * 150}, "palette"),
    ({"classes": ["a", "b"]}, "classes '2 entries' must have one entry per class \\(150\\)"),
    ({"architecture": "bert"}, "does not describe a SegNeXt"),
])
def test_values_out_of_range_are_one_line_naming_field_and_file(tmp_path, change, message):
    data = dict(fixture("config_pull_v0.1.json"), **change)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match=message) as err:
        read_config_file(path)
    assert "\n" not in str(err.value) and "config.json" in str(err.value)


def test_hostile_config_files_are_refused_without_reading_them_whole(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadInputError, match="nested too deeply|over"):
        read_config_file(deep)
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (2 << 20))
    with pytest.raises(BadInputError, match="over 1048576 bytes"):
        read_config_file(huge)
    with pytest.raises(BadInputError, match="not a regular file"):
        read_config_file(Path("/dev/zero"))


def test_fields_added_by_a_later_version_are_ignored():
    data = dict(fixture("config_local_v0.1.json"), some_future_field={"x": 1})
    assert ArtifactConfig.from_json(data).variant == "t"
