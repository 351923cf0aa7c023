"""Every key map, every variant: rules used, one-to-one, complete, invertible."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from segnext_hub import create_model
from segnext_hub.conversion.keymap import (
    available_key_maps,
    find_state_dict,
    load_key_map,
    parse_key_map,
)
from segnext_hub.conversion.official_tree import build_official
from segnext_hub.errors import BadInputError

VARIANTS = "tsbl"


def _keys(model) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict(model.state_dict())


def layout_states(layout: str, variant: str) -> list[OrderedDict]:
    """Realistic key sets of one layout, built from that layout's own module tree."""
    with torch.device("meta"):
        if layout == "mmseg":
            seg, bb = _keys(create_model(variant)), _keys(create_model(variant, backbone_only=True))
        else:
            seg = _keys(build_official(variant))
            bb = _keys(build_official(variant, backbone_only=True))
    if layout == "jittor":
        seg = OrderedDict((k, v) for k, v in seg.items() if not k.endswith("num_batches_tracked"))
        bb = OrderedDict((k, v) for k, v in bb.items() if not k.endswith("num_batches_tracked"))
    in1k = OrderedDict(bb)
    in1k["head.weight"] = torch.empty(1000, 8, device="meta")
    in1k["head.bias"] = torch.empty(1000, device="meta")
    ddp = OrderedDict((f"module.{k}", v) for k, v in in1k.items())
    return [seg, bb, ddp]


def reference_keys(variant: str, backbone: bool) -> set[str]:
    with torch.device("meta"):
        return set(create_model(variant, backbone_only=backbone).state_dict())


def test_shipped_maps():
    assert available_key_maps() == ["jittor", "mmseg", "official", "paddle"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", ["official", "jittor", "mmseg"])
def test_map_accounts_for_every_key(layout, variant):
    key_map = load_key_map(layout)
    used: dict[str, int] = {}
    for state, backbone in zip(layout_states(layout, variant), (False, True, True)):
        result = key_map.apply(state)
        for rule, hits in result.rule_hits.items():
            used[rule] = used.get(rule, 0) + hits
        # every produced key exists in the reference model, and all of its keys are produced
        assert set(result.tensors) == reference_keys(variant, backbone)
        # one-to-one: consumed + dropped + added accounts for every key exactly once
        dropped = {k for k, _ in result.dropped}
        assert len(result.tensors) == len(state) - len(dropped) + len(result.added)
        sources = [src for src, _ in result.renamed]
        assert len(sources) == len(set(sources))
        assert dropped <= set(state)
    unused = [rule for rule, hits in used.items() if hits == 0]
    assert not unused, f"rules of {layout} that match no key: {unused}"


def test_drop_is_anchored_so_decode_head_survives():
    state = OrderedDict([("head.weight", torch.zeros(1)), ("decode_head.conv_seg.weight", torch.zeros(1))])
    result = load_key_map("official").apply(state)
    assert list(result.tensors) == ["decode_head.conv_seg.weight"]
    assert result.dropped[0][0] == "head.weight"


@pytest.mark.parametrize("variant", VARIANTS)
def test_reverse_map_restores_official_names(variant):
    official = layout_states("official", variant)[0]
    forward = load_key_map("official").apply(official)
    back = load_key_map("official").inverted().apply(forward.tensors)
    assert list(back.tensors) == list(official)


@pytest.mark.parametrize("variant", "tb")
def test_jittor_reverse_drops_the_added_counters(variant):
    jittor = layout_states("jittor", variant)[0]
    forward = load_key_map("jittor").apply(jittor)
    assert forward.added and all(k.endswith("num_batches_tracked") for k in forward.added)
    back = load_key_map("jittor").inverted().apply(forward.tensors)
    assert set(back.tensors) == set(jittor)


def test_added_counter_value_and_dtype():
    state = OrderedDict([("bn.running_var", torch.ones(2)), ("bn.running_mean", torch.zeros(2))])
    key_map = parse_key_map("name: x\nrules:\n - add: {key: '{bn}.num_batches_tracked', for_each: '{bn}.running_var'}\n")
    result = key_map.apply(state)
    assert result.tensors["bn.num_batches_tracked"].dtype == torch.int64
    assert result.added == ["bn.num_batches_tracked"]


def test_colliding_rename_is_an_error():
    state = OrderedDict([("a.mlp.dwconv.dwconv.weight", torch.zeros(1)), ("a.mlp.dwconv.weight", torch.zeros(1))])
    with pytest.raises(BadInputError, match="two keys"):
        load_key_map("official").apply(state)


@pytest.mark.parametrize("text,match", [
    ("name: x\nrules:\n - drop: 'head'\n", "anchored"),
    ("name: x\nrules:\n - rename: {from: '{a}.x', to: '{b}.y'}\n", "same placeholders"),
    ("name: x\nrules:\n - explode: 1\n", "unknown rule"),
    ("rules: []\n", "needs 'name'"),
    ("name: [\n", "not valid YAML"),
])
def test_malformed_key_maps_are_rejected(text, match):
    with pytest.raises(BadInputError, match=match):
        parse_key_map(text)


def test_unknown_key_map_name():
    with pytest.raises(BadInputError, match="unknown key map"):
        load_key_map("caffe")


def test_find_state_dict_unwraps_containers():
    sd = OrderedDict([("a", torch.zeros(1))])
    assert find_state_dict({"state_dict": sd, "meta": {}}, ("state_dict",)) == (dict(sd), "state_dict")
    assert find_state_dict({"model": sd}, ("state_dict", "model")) == (dict(sd), "model")
    assert find_state_dict(sd, ("state_dict",)) == (dict(sd), None)
    with pytest.raises(BadInputError, match="no state dict"):
        find_state_dict({"epoch": 3}, ("state_dict",))
    with pytest.raises(BadInputError, match="not a tensor"):
        find_state_dict({"a": torch.zeros(1), "b": torch.zeros(1), "c": "oops"}, ())
