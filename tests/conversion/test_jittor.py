"""Jittor checkpoints as real Jittor writes them, read without importing jittor.

Evidence: the files in tests/data/jittor were written by the real ``jt.save`` of jittor 1.3.11.0 (new
form: ``jittor.jittor_core.Var(ndarray)``) and 1.3.7.16 (old form: numpy arrays; the release JSeg pins);
``expected.json`` beside them was written by the same run. The end-to-end conversion uses a full
SegNeXt-T state dict, which no real tiny file holds: it is written by :class:`JittorPickler` below, a
self-written *reproduction* of ``jt.save`` whose output is checked byte for byte against both real
new-form files first, so the real files prove the format and the reproduction only scales it up.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from segnext_hub.cli.convert import main as convert_cli
from segnext_hub.conversion.record import read_record
from segnext_hub.conversion.reading import read_checkpoint
from segnext_hub.errors import BadInputError, UnsafePickleError
from tests.helpers import factory

DATA = Path(__file__).resolve().parents[1] / "data" / "jittor"
EXPECTED = json.loads((DATA / "expected.json").read_text())["files"]
TRAILER = 20 + len(b"HCAJSLHD")


# --------------------------------------------------------------------------- a reproduction of jt.save


class JittorVar:
    """Stands in for a ``jittor.Var``: pickles as ``Var.__reduce__`` does, ``(Var, (self.data,))``."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data


def _var() -> None:  # pickled under jittor's name for Var
    """never called"""


def _reconstruct() -> None:  # pickled under numpy 1.x's name (numpy 2 here writes numpy._core)
    """never called"""


_GLOBALS = {id(_var): ("jittor", "jittor_core.Var"), id(_reconstruct): ("numpy.core.multiarray", "_reconstruct")}


class JittorPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 4 as ``jt.save`` under jittor 1.3.11 / numpy 1.26 writes it, without jittor or numpy 1."""

    def reducer_override(self, obj):
        if id(obj) in _GLOBALS:
            return "global"  # routed to save_global below
        if isinstance(obj, JittorVar):
            return _var, (obj.data,)
        if type(obj) is np.ndarray:
            _, args, state = obj.__reduce__()
            return _reconstruct, args, state
        return NotImplemented

    def save_global(self, obj, name=None):
        if id(obj) not in _GLOBALS:
            return super().save_global(obj, name)
        module, qualname = _GLOBALS[id(obj)]
        self.save(module)
        self.save(qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def jt_save_bytes(obj) -> bytes:
    """``jt.save``'s file: the pickle, its SHA-1 and the magic (``safepickle``)."""
    out = io.BytesIO()
    JittorPickler(out, 4).dump(obj)
    data = out.getvalue()
    return data + hashlib.sha1(data).digest() + b"HCAJSLHD"


def _as_vars(state: dict) -> dict:
    return {key: JittorVar(value.numpy() if isinstance(value, torch.Tensor) else value) for key, value in state.items()}


# --------------------------------------------------------------------------- helpers


def _plain(value):
    """JSON's view of a value (tuples become lists), to compare with expected.json."""
    return json.loads(json.dumps(value))


def _check_array(tensor: torch.Tensor, expected: dict, key: str) -> None:
    assert isinstance(tensor, torch.Tensor), key
    assert str(tensor.dtype).removeprefix("torch.") == expected["dtype"], key
    assert list(tensor.shape) == expected["shape"], key
    raw = tensor.contiguous().numpy().tobytes()  # this machine is little-endian, as the hashes are
    assert hashlib.sha256(raw).hexdigest() == expected["sha256"], key
    if "values" in expected:
        assert tensor.tolist() == expected["values"], key


# --------------------------------------------------------------------------- the real files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_jittor_files_read_exactly_as_expected(name):
    expected = EXPECTED[name]
    checkpoint = read_checkpoint(DATA / name)
    assert checkpoint.format == "jittor-pkl"
    assert (DATA / name).stat().st_size == expected["size"] and checkpoint.sha256 == expected["sha256"]
    obj = checkpoint.obj
    if "arrays" in expected:
        arrays = obj
    else:
        assert list(obj) == ["meta", "model", "scheduler", "optimizer"]
        assert _plain(obj["meta"]) == expected["meta"]
        assert _plain(obj["scheduler"]) == expected["scheduler"]
        assert _plain(obj["optimizer"]) == expected["optimizer"]
        arrays = obj["model"]
    wanted = expected.get("arrays") or expected["model"]
    assert list(arrays) == list(wanted)
    for key, spec in wanted.items():
        _check_array(arrays[key], spec, key)


def test_new_form_keeps_what_jittor_own_load_would_change():
    """int64 stays int64 (jt.load wraps it to int32), bfloat16 arrives as its stored uint16 bits,
    a 0-d value is the (1,) Jittor stored, and both forms hold the same values."""
    new = read_checkpoint(DATA / "var_state.pkl").obj
    old = read_checkpoint(DATA / "numpy_state.pkl").obj
    counts = new["extra.int64_counts"]
    assert counts.dtype == torch.int64 and counts.tolist() == [0, 2**40 + 7, -5]
    assert EXPECTED["var_state.pkl"]["jt_load_changes"]["extra.int64_counts"]["values"] == [0, 7, -5]
    bits = new["extra.bfloat16_weight"]
    assert bits.dtype == torch.uint16 and bits.tolist() == [16256, 49184, 15904, 32609]
    assert bits.view(torch.bfloat16).tolist() == [1.0, -2.5, 0.15625, pytest.approx(3e38, rel=1e-2)]
    assert new["extra.scalar_from_0d"].shape == (1,)
    assert list(old) == [k for k in new if k != "extra.bfloat16_weight"]
    for key, value in old.items():
        assert value.dtype == new[key].dtype and torch.equal(value, new[key]), key


def test_reading_jittor_files_never_imports_jittor(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    package = tmp_path / "jittor"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "jittor", raising=False)
    read_checkpoint(DATA / "runner_checkpoint.pkl")
    assert not marker.exists() and "jittor" not in sys.modules


def _with_global(name: bytes) -> bytes:
    """var_state.pkl with ``jittor_core.Var`` renamed (same length, so the frame stays valid) and
    its SHA-1 trailer recomputed."""
    body = (DATA / "var_state.pkl").read_bytes()[:-TRAILER]
    assert body.count(b"\x8c\x0fjittor_core.Var") == 1 and len(name) == 15
    body = body.replace(b"\x8c\x0fjittor_core.Var", b"\x8c\x0f" + name)
    return body + hashlib.sha1(body).digest() + b"HCAJSLHD"


@pytest.mark.parametrize("data, shown", [
    (_with_global(b"jittor_core.ops"), "jittor.jittor_core.ops"),
    (_with_global(b"jittor_core.Va_"), "jittor.jittor_core.Va_"),
    (b"\x80\x02cjittor\nload\n(S'x.pkl'\ntR.", "jittor.load"),
    (b"\x80\x04\x8c\x12jittor.jittor_core\x8c\x10set_global_flags\x93).", "jittor.jittor_core.set_global_flags"),
])
def test_other_jittor_globals_are_refused(tmp_path, data, shown):
    path = tmp_path / "other.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=shown.replace(".", r"\.")):
        read_checkpoint(path)


@pytest.mark.parametrize("args", [b"S'x'\n", b"N", b"(lp0\n", b"cnumpy\ndtype\n(S'f4'\ntR"])
def test_a_var_must_be_rebuilt_from_one_numpy_array(tmp_path, args):
    path = tmp_path / "var.pkl"
    path.write_bytes(b"\x80\x02cjittor\njittor_core.Var\n(" + args + b"tR.")
    with pytest.raises(BadInputError, match="jittor Var rebuilt from"):
        read_checkpoint(path)


def test_the_reproduction_pickler_writes_the_real_files_byte_for_byte():
    for name in ("var_state.pkl", "runner_checkpoint.pkl"):
        obj = read_checkpoint(DATA / name).obj
        if "model" in obj:
            obj["model"] = _as_vars(obj["model"])
        else:
            obj = _as_vars(obj)
        assert jt_save_bytes(obj) == (DATA / name).read_bytes(), name


# --------------------------------------------------------------------------- end to end


def _jseg_runner_file(path: Path, state: dict, md_r: int = 16) -> Path:
    """JSeg's ``Runner.save`` container as the real new-form file has it (meta with the real config,
    scheduler, optimizer), with ``model`` replaced by a full SegNeXt-T state dict as Vars."""
    container = read_checkpoint(DATA / "runner_checkpoint.pkl").obj
    container["meta"]["config"]["model"]["decode_head"]["ham_kwargs"]["MD_R"] = md_r
    container["model"] = _as_vars(factory.to_jittor(state))
    path.write_bytes(jt_save_bytes(container))
    return path


def test_segnext_convert_reads_a_jseg_runner_checkpoint_in_the_new_form(tmp_path):
    state = factory.mmseg_state("t", seed=5)
    src = _jseg_runner_file(tmp_path / "segnext_tiny_512x512_ade_160k.pkl", state)
    assert b"\x8c\x06jittor\x94\x8c\x0fjittor_core.Var\x94\x93" in src.read_bytes()
    result = CliRunner().invoke(convert_cli, [str(src), str(tmp_path / "out.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    det = report["detection"]
    assert report["container"] == "model" and report["source_format"] == "jittor-pkl"
    assert (det["layout"], det["kind"], det["variant"], det["num_classes"]) == ("jittor", "segmentor", "t", 150)
    assert det["md_r"] == 16 and det["sources"]["md_r"] == "checkpoint meta.config (ham_kwargs MD_R=16)"
    assert report["verification"]["verified"] and report["verification"]["max_abs_diff"] == 0.0
    out = load_file(tmp_path / "out.safetensors")
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert out[key].dtype == value.dtype and torch.equal(out[key], value), key


def test_md_r_comes_from_the_jseg_config_dict():
    meta = read_checkpoint(DATA / "runner_checkpoint.pkl").obj["meta"]
    assert read_record({"meta": meta}).md_r == 16
    meta["config"]["model"]["decode_head"]["ham_kwargs"]["MD_R"] = 8
    assert read_record({"meta": meta}).md_r == 8
