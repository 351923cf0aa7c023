"""Warm load: what ``load`` promises about the model it stamps out of the cached skeleton.

A loaded model is the model ``create_model`` + ``load_state_dict`` would give (same
modules, attributes, tensors and outputs), in eval mode; its CPU weights are views of a
private memory map of the file; two loads share no tensor, no hook table and no mutable
attribute, and writing to one reaches neither the other nor the file.

Evidence: the package's own reference model and converter, generated weights
(tests/helpers/factory), files written by the converter and by the safetensors library.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from segnext_hub.conversion.converter import convert
from segnext_hub.errors import BadInputError
from segnext_hub.fileio import sha256_file
from segnext_hub.loading import _copy_with_weights, _plan, load_folder, map_safetensors
from segnext_hub.models import build_model
from tests.helpers import factory

_TENSOR_TABLES = ("_parameters", "_buffers", "_modules")


@pytest.fixture(scope="module")
def cached_t(tmp_path_factory) -> tuple[Path, dict]:
    """A cache-style folder (converter output + config.json) for a random SegNeXt-T."""
    tmp = tmp_path_factory.mktemp("warm")
    state = factory.mmseg_state("t", seed=3, md_r=16)
    factory.write_mmseg(tmp / "src.pth", state)
    folder = tmp / "mscan-t"
    folder.mkdir()
    convert(tmp / "src.pth", folder / "model.safetensors", verify=False)
    (folder / "config.json").write_text(json.dumps({"variant": "t", "kind": "segmentor", "num_classes": 150,
                                                    "md_r": 16}))
    return folder, state


def reference(state: dict) -> nn.Module:
    model = build_model("t", num_classes=150, md_r=16)
    model.load_state_dict(state)
    return model.eval()


def test_a_load_is_the_model_create_model_and_load_state_dict_build(cached_t):
    folder, state = cached_t
    model, ref = load_folder(folder), reference(state)
    assert type(model) is type(ref)
    ours, theirs = dict(model.named_modules()), dict(ref.named_modules())
    assert list(ours) == list(theirs)
    for name, module in ours.items():
        other = theirs[name]
        assert type(module) is type(other), name
        assert not module.training, name
        plain = {k: v for k, v in vars(module).items() if k not in _TENSOR_TABLES and k != "segnext_config"}
        assert plain == {k: v for k, v in vars(other).items() if k not in _TENSOR_TABLES}, name
        assert list(module._modules) == list(other._modules), name
    for key, value in ref.state_dict().items():
        loaded = model.state_dict()[key]
        assert loaded.dtype == value.dtype and torch.equal(loaded, value), key
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in model.parameters())
    assert len(list(model.parameters())) == len(list(ref.parameters()))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x, generator=torch.Generator().manual_seed(1)),
                           ref(x, generator=torch.Generator().manual_seed(1)))
    assert model.segnext_config.md_r == 16 and model.decode_head.md_r == ref.decode_head.md_r


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the Linux memory map")
def test_cpu_weights_are_views_of_a_private_mapping_of_the_file(cached_t):
    folder, _ = cached_t
    model = load_folder(folder)
    weights = folder / "model.safetensors"
    mappings = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(weights.resolve()):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            mappings.append((start, end, fields[1]))
    assert mappings, "the weights file is not mapped"
    for p in model.parameters():
        hits = [perms for start, end, perms in mappings if start <= p.data_ptr() < end]
        assert hits and all(perms.endswith("p") for perms in hits)  # inside a private (copy-on-write) map


def test_two_loads_are_independent_and_never_write_the_file(cached_t):
    folder, state = cached_t
    before = sha256_file(folder / "model.safetensors")
    first, second = load_folder(folder), load_folder(folder)
    storages = {p.untyped_storage().data_ptr() for p in first.state_dict().values()}
    assert not storages & {p.untyped_storage().data_ptr() for p in second.state_dict().values()}
    key = "decode_head.conv_seg.weight"
    with torch.no_grad():
        first.decode_head.conv_seg.weight.add_(1.0)
        first.backbone.block1[0].norm1.running_mean.zero_()
    assert torch.equal(second.state_dict()[key], state[key])
    assert torch.equal(second.backbone.block1[0].norm1.running_mean, state["backbone.block1.0.norm1.running_mean"])
    # hooks, flags and attributes are per instance too
    first.decode_head.register_forward_hook(lambda *args: None)
    first.backbone.train()
    first.decode_head.hamburger.ham.rank = 3
    assert not second.decode_head._forward_hooks and not second.backbone.training
    assert second.decode_head.md_r == 16
    for a, b in zip(first.modules(), second.modules()):
        for name, value in vars(a).items():
            if isinstance(value, (dict, list, set)):
                assert value is not vars(b)[name], name
    third = load_folder(folder)  # a fresh load sees the file, which the writes never reached
    assert torch.equal(third.state_dict()[key], state[key])
    assert sha256_file(folder / "model.safetensors") == before


def test_dtype_and_device_follow_module_to(cached_t):
    folder, state = cached_t
    model = load_folder(folder, dtype=torch.float64)
    expected = reference(state).to(torch.float64)
    for key, value in expected.state_dict().items():
        got = model.state_dict()[key]
        assert got.dtype == value.dtype and torch.equal(got, value), key
    assert model.backbone.block1[0].norm1.num_batches_tracked.dtype == torch.int64
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())


def test_a_damaged_weights_file_is_one_line_of_bad_input(cached_t, tmp_path):
    folder, _ = cached_t
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((folder / "config.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="cannot read") as info:
        load_folder(broken)
    assert "\n" not in str(info.value)
    (broken / "model.safetensors").write_bytes(data)
    (broken / "config.json").write_text(json.dumps({"variant": "s", "kind": "segmentor", "num_classes": 150}))
    with pytest.raises(BadInputError, match="shape mismatch|missing|unexpected key"):
        load_folder(broken)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.uint8, torch.bool])
def test_map_safetensors_reads_what_the_library_reads(tmp_path, dtype):
    """Mapped dtypes and the load_file fallback (bool; an odd-sized tensor before a wide one)."""
    gen = torch.Generator().manual_seed(0)
    tensors = {"a.odd": torch.randint(0, 2, (3,), generator=gen).to(dtype),
               "b.wide": torch.randn(4, 5, generator=gen).to(torch.float32),
               "c.empty": torch.zeros(0, 7, dtype=torch.float32), "d.scalar": torch.tensor(7, dtype=torch.int64)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ours, theirs = map_safetensors(path), load_file(str(path))
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key


class _Odd(nn.Module):
    """Attributes SegNeXt lacks: nested containers, an object, tied parameters, a hook."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 3)
        self.second.weight = self.first.weight
        self.sizes = [1, 2]
        self.table = {"a": [1, 2]}
        self.note = collections.Counter(x=1)
        self.first.register_forward_hook(self._count)
        self.calls = 0

    def _count(self, *args) -> None:
        self.calls += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_the_clone_copies_what_it_cannot_share_and_keeps_ties():
    with torch.device("meta"):
        template = _Odd()
    skeleton = _plan(template)
    state = {k: torch.randn(v.shape) for k, v in template.state_dict().items()}
    one, two = _copy_with_weights(skeleton, state), _copy_with_weights(skeleton, state)
    assert one.second.weight is one.first.weight  # tied parameters stay tied
    one.sizes.append(3)
    one.table["a"].append(3)
    one.note["x"] += 1
    assert (two.sizes, two.table, two.note) == ([1, 2], {"a": [1, 2]}, collections.Counter(x=1))
    one(torch.randn(2, 3))
    assert (one.calls, two.calls, template.calls) == (1, 0, 0)  # the hook is bound to its own clone
    assert not one.training and not one.first.training


def test_a_tensor_outside_the_state_dict_is_refused_at_plan_time():
    class Hidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    with torch.device("meta"), pytest.raises(RuntimeError, match="outside the state dict"):
        _plan(Hidden())


def test_a_load_imports_no_compiler(cached_t):
    """Initialising a meta skeleton would import torch._dynamo (seconds, and stdlib modules a
    restricted user may not read); the skeleton skips initialisation instead."""
    import subprocess
    import sys

    folder, _ = cached_t
    code = ("import sys, segnext_hub; segnext_hub.load(sys.argv[1]); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
