"""segnext-convert: detection, mapping, verification, writing, round trips, bad input."""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

import segnext_hub.conversion.converter as convert_module
from segnext_hub.cli.convert import main as convert_cli
from segnext_hub.conversion.converter import convert
from segnext_hub.conversion.keymap import KeyMap, Rule, load_key_map
from segnext_hub.errors import VerificationError
from tests.helpers import factory


@pytest.fixture(scope="module")
def t_state():
    return factory.mmseg_state("t", seed=1)


@pytest.fixture(scope="module")
def t_backbone():
    return factory.mmseg_state("t", seed=2, backbone_only=True)


def run_cli(*args: str):
    result = CliRunner().invoke(convert_cli, [str(a) for a in args])
    return result.exit_code, result.output


def _assert_same(a: dict, b: dict, skip_counters: bool = False):
    keys = [k for k in b if not (skip_counters and k.endswith("num_batches_tracked"))]
    assert sorted(k for k in a if not (skip_counters and k.endswith("num_batches_tracked"))) == sorted(keys)
    for k in keys:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- happy paths
def test_official_segmentor_to_safetensors(tmp_path, t_state):
    src = factory.write_official(tmp_path / "official.pth", t_state, md_r=16)
    report = convert(src, tmp_path / "out.safetensors")
    det = report.detection
    assert (det["layout"], det["kind"], det["variant"], det["num_classes"], det["dataset"]) == \
        ("official", "segmentor", "t", 150, "ade20k")
    assert det["md_r"] == 16 and "meta" in det["sources"]["md_r"]
    assert report.renamed == 26 and report.verification["verified"]
    assert report.verification["max_abs_diff"] == 0.0
    assert set(report.verification["per_output"]) == {"stage1", "stage2", "stage3", "stage4", "logits"}
    _assert_same(load_file(tmp_path / "out.safetensors"), t_state)
    with safe_open(tmp_path / "out.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["variant"] == "t" and meta["num_classes"] == "150"
    assert meta["source_layout"] == "official" and meta["key_map"] == "official"
    assert meta["source_sha256"] == report.source_sha256 and json.loads(meta["verification"])["verified"]


def test_md_r_defaults_by_layout_and_override(tmp_path):
    state = factory.mmseg_state("b", seed=3, md_r=64)
    src = factory.write_official(tmp_path / "b.pth", state)  # config text without ham_kwargs: B/L
    report = convert(src, tmp_path / "b.safetensors")
    assert report.detection["md_r"] == 64
    assert report.detection["sources"]["md_r"] == "checkpoint meta.config (LightHamHead without MD_R: code default 64)"
    report = convert(src, tmp_path / "b16.safetensors", md_r=16)
    assert report.detection["md_r"] == 16 and report.detection["sources"]["md_r"] == "user override"
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": factory.to_official(state)}, bare)  # nothing recorded: the layout's default
    report = convert(bare, tmp_path / "bare.safetensors")
    assert report.detection["md_r"] == 64 and "official" in report.detection["sources"]["md_r"]


def test_official_round_trip_is_bit_exact(tmp_path, t_state):
    src = factory.write_official(tmp_path / "official.pth", t_state)
    convert(src, tmp_path / "mm.safetensors")
    convert(tmp_path / "mm.safetensors", tmp_path / "back.pth", to="official")
    back = torch.load(tmp_path / "back.pth", weights_only=True)["state_dict"]
    _assert_same(back, factory.to_official(t_state))


def test_jittor_to_mmseg_is_bit_exact(tmp_path, t_state):
    src = factory.write_jittor(tmp_path / "segnext_tiny.pkl", t_state)
    report = convert(src, tmp_path / "out.safetensors")
    assert report.detection["layout"] == "jittor" and report.added == 31
    out = load_file(tmp_path / "out.safetensors")
    _assert_same(out, t_state, skip_counters=True)
    assert all(out[k].item() == 0 for k in out if k.endswith("num_batches_tracked"))


def test_official_in1k_backbone_with_ddp_and_classifier(tmp_path, t_backbone):
    src = factory.write_official_in1k(tmp_path / "mscan_t.pth", t_backbone)
    report = convert(src, tmp_path / "bb.safetensors")
    assert report.detection["kind"] == "backbone" and report.detection["md_r"] is None
    assert sorted(k for k, _ in report.dropped) == ["module.head.bias", "module.head.weight"]
    assert report.stripped_prefixes == {"module.": len(t_backbone) + 2}
    assert set(report.verification["per_output"]) == {"stage1", "stage2", "stage3", "stage4"}
    _assert_same(load_file(tmp_path / "bb.safetensors"), t_backbone)


def test_mmseg_pth_output_is_mmseg_loadable(tmp_path, t_state):
    src = factory.write_mmseg(tmp_path / "mm.pth", t_state)
    convert(src, tmp_path / "out.pth")
    ckpt = torch.load(tmp_path / "out.pth", weights_only=True)
    assert len(ckpt["meta"]["dataset_meta"]["classes"]) == 150
    assert len(ckpt["meta"]["dataset_meta"]["palette"]) == 150
    _assert_same(ckpt["state_dict"], t_state)


def test_existing_destination_is_kept_without_force(tmp_path, t_state):
    src = factory.write_mmseg(tmp_path / "mm.pth", t_state)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"precious")
    code, out = run_cli(src, dst)
    assert code == 2 and "already exists" in out and dst.read_bytes() == b"precious"
    code, _ = run_cli(src, dst, "--force")
    assert code == 0 and dst.read_bytes() != b"precious"


def test_cli_json_report(tmp_path, t_state):
    src = factory.write_official(tmp_path / "o.pth", t_state)
    code, out = run_cli(src, tmp_path / "o.safetensors", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["verification"]["verified"] and report["output_sha256"]


def test_cli_human_report(tmp_path, t_state):
    src = factory.write_official(tmp_path / "o.pth", t_state)
    code, out = run_cli(src, tmp_path / "o.safetensors")
    assert code == 0 and "verify      OK" in out and "26 renamed" in out


def test_no_verify_skips_comparison(tmp_path, t_state):
    src = factory.write_official(tmp_path / "o.pth", t_state)
    report = convert(src, tmp_path / "o.safetensors", verify=False)
    assert report.verification is None


# ---------------------------------------------------------------- verification catches lies
def test_swapping_two_same_shaped_tensors_is_caught(tmp_path, t_state, monkeypatch):
    """A key map whose renames swap proj_1 and proj_2 of one block must fail verification."""
    real = load_key_map

    def evil(name):
        km = real(name)
        swap = (Rule("rename", "{s}.block1.0.attn.proj_1.{p}", "{s}.block1.0.attn.tmp.{p}"),
                Rule("rename", "{s}.block1.0.attn.proj_2.{p}", "{s}.block1.0.attn.proj_1.{p}"),
                Rule("rename", "{s}.block1.0.attn.tmp.{p}", "{s}.block1.0.attn.proj_2.{p}"))
        return KeyMap(km.name, km.description, km.unwrap, km.rules + swap) if name == "official" else km

    monkeypatch.setattr(convert_module, "load_key_map", evil)
    src = factory.write_official(tmp_path / "o.pth", t_state)
    with pytest.raises(VerificationError, match="verification failed"):
        convert(src, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    code, out = run_cli(src, tmp_path / "o.safetensors")
    assert code == 1 and out.count("\n") == 1 and "nothing written" in out
    assert list(tmp_path.iterdir()) == [tmp_path / "o.pth"]


def test_tolerance_flag(tmp_path, t_state, monkeypatch):
    """Tiny numerical noise in the target fails the exact default but passes with --atol."""
    from segnext_hub.conversion import verify as verify_module
    real = verify_module.load_into

    def noisy(model, tensors, layout):
        model = real(model, tensors, layout)
        if layout == "mmseg":
            # a new tensor: source and target share storage (both load by assignment)
            bias = model.backbone.norm4.bias
            model.backbone.norm4.bias = torch.nn.Parameter(bias.detach() + 1e-6)
        return model

    monkeypatch.setattr(convert_module, "load_into", noisy)
    src = factory.write_official(tmp_path / "o.pth", t_state)
    with pytest.raises(VerificationError):
        convert(src, tmp_path / "a.safetensors")
    report = convert(src, tmp_path / "b.safetensors", atol=1e-3)
    assert report.verification["verified"] and 0 < report.verification["max_abs_diff"] <= 1e-3


# ---------------------------------------------------------------- bad input
def _write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def bad_inputs(tmp: Path, state: dict) -> dict[str, Path]:
    official = factory.to_official(state)
    valid = factory.write_official(tmp / "valid.pth", state).read_bytes()
    cases = {
        "missing file": tmp / "nope.pth",
        "directory": tmp,
        "empty file": tmp / "empty.pth",
        "truncated": tmp / "truncated.pth",
        "random bytes": tmp / "random.pth",
        "resnet": _write(tmp / "resnet.pth", {"conv1.weight": torch.zeros(64, 3, 7, 7),
                                             "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1),
                                             "fc.weight": torch.zeros(1000, 2048)}),
        "missing keys": _write(tmp / "missing.pth", OrderedDict(
            (k, v) for k, v in official.items() if "block2.1.attn.proj_1" not in k)),
        "extra keys": _write(tmp / "extra.pth", OrderedDict(official, **{"backbone.block1.0.extra": torch.zeros(1)})),
        "wrong shape": _write(tmp / "shape.pth", OrderedDict(
            official, **{"backbone.block1.0.attn.proj_1.weight": torch.zeros(32, 32, 3, 3)})),
        "mixed names": _write(tmp / "mixed.pth", OrderedDict(
            [(k.replace("block1.0.mlp.dwconv.dwconv", "block1.0.mlp.dwconv"), v) for k, v in official.items()])),
        "malicious": tmp / "evil.pth",
    }
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "truncated.pth").write_bytes(valid[: len(valid) // 2])
    (tmp / "random.pth").write_bytes(random.Random(0).randbytes(4096))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    (tmp / "evil.pth").write_bytes(pickle.dumps({"state_dict": Evil()}))
    return cases


EXPECTED = {
    "missing file": "not found|no such|does not exist", "directory": "directory",
    "empty file": "empty", "truncated": "truncat|corrupt|cannot read", "random bytes": "not a|cannot read|unrecognised|unknown",
    "resnet": "not a SegNeXt", "missing keys": "missing", "extra keys": "unexpected",
    "wrong shape": "shape mismatch", "mixed names": "mixes .*official", "malicious": "refus|unsafe|not allowed",
}


def test_bad_inputs_give_one_line_exit_2_and_no_output(tmp_path, t_state):
    cases = bad_inputs(tmp_path, t_state)
    for name, src in cases.items():
        dst = tmp_path / "out" / f"{name.replace(' ', '_')}.safetensors"
        dst.parent.mkdir(exist_ok=True)
        code, out = run_cli(src, dst)
        assert code == 2, (name, code, out)
        assert out.startswith("error: ") and out.count("\n") == 1, (name, out)
        assert "Traceback" not in out
        import re
        assert re.search(EXPECTED[name], out, re.I), (name, out)
        assert not dst.exists(), name
    assert not (tmp_path / "pwned").exists()
    assert not [p for p in (tmp_path / "out").iterdir()]


def test_wrong_overrides_are_bad_input(tmp_path, t_state):
    src = factory.write_mmseg(tmp_path / "m.pth", t_state)
    code, out = run_cli(src, tmp_path / "x.safetensors", "--variant", "b")
    assert code == 2 and "missing" in out or "shape" in out
    code, out = run_cli(src, tmp_path / "x.safetensors", "--num-classes", "19")
    assert code == 2 and "shape mismatch" in out and "conv_seg" in out
    code, out = run_cli(src, tmp_path / "x.txt")
    assert code == 2 and ".safetensors" in out


def test_fuzzed_checkpoints_never_crash(tmp_path, t_state):
    """Bounded fuzz: byte and structure mutations end in exit 0/1/2, one line, no stray files."""
    rng = random.Random(1234)
    official = factory.to_official(t_state)
    valid = factory.write_official(tmp_path / "valid.pth", t_state).read_bytes()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for case in range(40):
        src = tmp_path / f"fuzz{case}.pth"
        if case % 2 == 0:
            data = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                op = rng.choice(["flip", "cut", "insert"])
                pos = rng.randrange(len(data))
                if op == "flip":
                    data[pos] ^= 1 << rng.randrange(8)
                elif op == "cut":
                    del data[pos:pos + rng.randint(1, 64)]
                else:
                    data[pos:pos] = rng.randbytes(rng.randint(1, 16))
            src.write_bytes(bytes(data))
        else:
            state = OrderedDict(official)
            keys = list(state)
            op = rng.choice(["drop", "rename", "reshape", "retype", "wrap"])
            key = rng.choice(keys)
            if op == "drop":
                del state[key]
            elif op == "rename":
                state[key + "x"] = state.pop(key)
            elif op == "reshape":
                state[key] = torch.zeros(3, 5)
            elif op == "retype":
                state[key] = "not a tensor"
            else:
                state = {"model": {"inner": state}}
            torch.save(state, src)
        dst = out_dir / f"fuzz{case}.safetensors"
        code, out = run_cli(src, dst)
        assert code in (0, 1, 2), (case, code, out)
        assert "Traceback" not in out
        if code != 0:
            assert out.count("\n") == 1 and out.startswith("error: "), (case, out)
            assert not dst.exists()
    assert all(p.suffix == ".safetensors" for p in out_dir.iterdir())


def test_console_script_prints_one_line_without_traceback(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "segnext_hub.cli.convert", str(tmp_path / "bad.pth"),
                           str(tmp_path / "o.safetensors")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""
