"""The source-layout registry: every layout is data, and a new one needs nothing else.

Evidence: the shipped layouts are checked against the files the rest of the suite makes
(MMSeg-, official- and Jittor-style, see tests/helpers/factory.py); the toy layout below
is defined entirely inside this test (one YAML key map + one registry entry) and a
checkpoint in it converts end to end through the real converter and verifier.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from segnext_hub.conversion import layouts
from segnext_hub.conversion.converter import convert
from segnext_hub.conversion.layouts import get_layout, layout_names, parse_layout, recognise
from segnext_hub.errors import BadInputError
from segnext_hub.hub.registry import load_registry
from tests.helpers import factory

TOY_MAP = """\
name: toy
description: a toy layout whose MLP depth-wise conv is called `dw`
unwrap: [state_dict]
rules:
  - strip_prefix: "module."
  - rename:
      from: "{stem}.mlp.dw.{param}"
      to: "{stem}.mlp.dwconv.{param}"
"""


@pytest.fixture
def toy_layout(tmp_path):
    key_map = tmp_path / "toy.yaml"
    key_map.write_text(TOY_MAP)
    layout = parse_layout({
        "name": "toy", "description": "toy", "key_map": str(key_map), "names": "toy", "reference": "mmseg",
        "target": True, "default_md_r": 16, "default_md_r_note": "toy default",
        "recognise": [{"why": "toy mlp.dw names", "has": [r"(^|\.)mlp\.dw\.(weight|bias)$"]}],
    }, "test")
    layouts.register_layout(layout)
    yield layout
    layouts.unregister_layout("toy")


def test_shipped_layouts_derive_targets_choices_and_registry_names():
    assert layout_names() == ("mmseg", "jittor", "official", "paddle")
    assert layout_names(targets_only=True) == ("mmseg", "official", "paddle")
    assert {art.layout for art in load_registry().values()} <= set(layout_names())
    from segnext_hub.cli.convert import main

    choices = {p.name: getattr(p.type, "choices", None) for p in main.params}
    assert tuple(choices["from_layout"]) == ("auto", *layout_names())
    assert tuple(choices["to"]) == layout_names(targets_only=True)


@pytest.mark.parametrize("make, expected", [
    (lambda s: s, "mmseg"),
    (factory.to_official, "official"),
    (factory.to_jittor, "jittor"),
])
def test_recognise_each_shipped_layout(make, expected):
    state = make(factory.mmseg_state("t"))
    assert recognise(list(state), "zip")[0].name == expected


def test_mixed_names_and_foreign_keys_are_refused():
    state = dict(factory.mmseg_state("t"))
    official = factory.to_official(state)
    mixed = {**state, **{k: v for k, v in official.items() if "dwconv.dwconv" in k}}
    with pytest.raises(BadInputError, match="mixes mmseg and official"):
        recognise(list(mixed), "zip")
    with pytest.raises(BadInputError, match="not a SegNeXt checkpoint"):
        recognise(["conv1.weight", "fc.weight"], "zip")


def test_default_md_r_is_the_layouts():
    assert get_layout("mmseg").md_r_for("b") == 16
    assert get_layout("official").md_r_for("b") == 64
    assert get_layout("jittor").fills == ("num_batches_tracked",)


@pytest.mark.parametrize("entry, message", [
    ({"reference": "paddle"}, "reference must be"),
    ({"default_md_r": {"t": 16}}, "default_md_r"),
    ({"recognise": []}, "recognise clause"),
    ({"colour": "red"}, "unknown"),
])
def test_malformed_entries_are_one_line(entry, message):
    base = {"name": "x", "description": "x", "key_map": "mmseg", "names": "x", "reference": "mmseg",
            "target": False, "default_md_r": 16, "default_md_r_note": "x",
            "recognise": [{"why": "x", "has": ["x"]}]}
    with pytest.raises(BadInputError, match=message):
        parse_layout({**base, **entry})


def test_a_shipped_layout_cannot_be_replaced():
    with pytest.raises(BadInputError, match="shipped"):
        layouts.register_layout(get_layout("mmseg"))


def test_toy_layout_converts_end_to_end(tmp_path, toy_layout):
    """One YAML map and one entry, both made here: recognised, renamed, detected (on the
    renamed keys), verified and written, with no other file touched."""
    state = factory.mmseg_state("t")
    toy_state = {re.sub(r"\.mlp\.dwconv\.", ".mlp.dw.", k): v for k, v in state.items()}
    assert toy_state.keys() != state.keys()
    src = tmp_path / "toy.pth"
    torch.save({"state_dict": toy_state}, src)
    report = convert(src, tmp_path / "out.safetensors")
    assert report.detection["layout"] == "toy"
    assert report.detection["sources"]["layout"] == "detected: toy mlp.dw names"
    assert report.detection["variant"] == "t" and report.detection["md_r"] == 16
    assert report.detection["sources"]["md_r"] == "default: toy default"
    assert report.verification["verified"] and report.verification["max_abs_diff"] == 0.0
    out = load_file(tmp_path / "out.safetensors")
    assert out.keys() == state.keys()
    assert all(torch.equal(out[k], state[k]) for k in state)

    # ... and back: the toy layout is a target too, its map inverted.
    back = convert(tmp_path / "out.safetensors", tmp_path / "back.safetensors", to="toy")
    assert back.key_map == "mmseg+toy-reverse"
    assert load_file(tmp_path / "back.safetensors").keys() == toy_state.keys()
