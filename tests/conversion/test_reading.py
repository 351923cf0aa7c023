"""Safe checkpoint reading and atomic writing: every container, foreign objects, hostile and broken files."""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import random
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch

from segnext_hub.conversion import containers, writing
from segnext_hub.conversion import reading as ckpt
from segnext_hub.conversion.pickled import Placeholder
from segnext_hub.conversion.reading import Checkpoint, read_checkpoint
from segnext_hub.conversion.writing import write_pth, write_safetensors
from segnext_hub.errors import BadInputError, UnsafePickleError
from segnext_hub.fileio import sha256_file

JITTOR_MAGIC = b"HCAJSLHD"


# --------------------------------------------------------------------------- fixtures built at test time


def _state_dict() -> collections.OrderedDict:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    return collections.OrderedDict(
        [
            ("module.backbone.patch_embed1.proj.0.weight", torch.randn(8, 3, 3, 3, generator=gen)),
            ("module.backbone.patch_embed1.proj.1.num_batches_tracked", torch.tensor(7)),
            ("module.decode_head.conv_seg.bias", torch.randn(19, generator=gen).half()),
            ("transposed", base.t()),  # non-contiguous
            ("row", base[1]),  # a view sharing storage with ``transposed``
            ("mask", torch.tensor([True, False, True])),
            ("empty", torch.zeros(0, 5)),
        ]
    )


def _assert_same_tensors(expected, actual):
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def _raw_bytes(tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def _jittor_bytes(obj, *, trailer: bool = True, protocol: int = 4) -> bytes:
    data = pickle.dumps(obj, protocol=protocol)
    return data + hashlib.sha1(data).digest() + JITTOR_MAGIC if trailer else data


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _one_line_error(excinfo, path=None):
    text = str(excinfo.value)
    assert "\n" not in text and text
    if path is not None:
        assert str(path) in text
    return text


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_checkpoint_round_trip_keeps_nesting_and_keys(tmp_path, legacy):
    state = _state_dict()
    state["gamma"] = torch.nn.Parameter(torch.full((2,), 1e-6, dtype=torch.bfloat16))  # state_dict(keep_vars=True)
    meta = {"CLASSES": ("road", "sky"), "PALETTE": [[1, 2, 3], [4, 5, 6]], "seed": 3, "config": "model = dict()"}
    path = tmp_path / "seg.pth"
    torch.save({"meta": meta, "state_dict": state}, path, _use_new_zipfile_serialization=not legacy)

    got = read_checkpoint(path)

    assert isinstance(got, Checkpoint)
    assert got.format == ("torch-legacy" if legacy else "torch-zip")
    assert got.sha256 == sha256_file(path) and got.metadata == {} and got.path == path
    assert got.obj["meta"] == meta
    assert type(got.obj["state_dict"]) is collections.OrderedDict
    _assert_same_tensors(state, got.obj["state_dict"])  # ``module.`` prefixes are left alone
    assert not got.obj["state_dict"]["transposed"].is_contiguous()
    assert type(got.obj["state_dict"]["gamma"]) is torch.Tensor  # values, not trainable parameters


def test_large_files_hash_on_a_helper_thread_to_the_same_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "THREADED_HASH_MIN", 1)
    monkeypatch.setattr(writing, "THREADED_HASH_MIN", 1)
    monkeypatch.setattr(ckpt, "_READ_CHUNK", 4096)  # many chunks queued behind the reads
    state = {"w": torch.randn(64, 256), "b": torch.randn(300)}
    torch.save(state, tmp_path / "big.pth")
    assert read_checkpoint(tmp_path / "big.pth").sha256 == sha256_file(tmp_path / "big.pth")
    digest = write_safetensors(tmp_path / "big.safetensors", state, {"k": "v"})
    assert digest == sha256_file(tmp_path / "big.safetensors")


def test_views_keep_sharing_their_storage(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    torch.save({"base": base, "row": base[1]}, tmp_path / "v.pth")
    got = read_checkpoint(tmp_path / "v.pth").obj
    got["base"][1, 0] = 100.0
    assert got["row"][0] == 100.0


def test_big_endian_zip_checkpoint(tmp_path):
    """A checkpoint saved on a big-endian machine says so in its ``byteorder`` record."""
    state = {"w": torch.randn(3, 4), "h": torch.randn(5).half()}
    torch.save(state, tmp_path / "le.pth")

    def swap(name, payload):
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:
            width = 2 if len(payload) == 10 else 4  # the float16 record holds 5 x 2 bytes
            return np.frombuffer(payload, dtype=f"<u{width}").byteswap().tobytes()
        return payload

    _write(tmp_path / "be.pth", _rezip_with((tmp_path / "le.pth").read_bytes(), swap, every_record=True))
    assert torch.equal(torch.load(tmp_path / "be.pth", weights_only=True)["w"], state["w"])  # torch agrees
    _assert_same_tensors(state, read_checkpoint(tmp_path / "be.pth").obj)


def test_expanded_views_load_but_cannot_explode(tmp_path):
    torch.save({"bias": torch.arange(3.0).expand(4, 3)}, tmp_path / "small.pth")  # stride 0, as torch saves it
    assert torch.equal(read_checkpoint(tmp_path / "small.pth").obj["bias"], torch.arange(3.0).expand(4, 3))
    torch.save({"bomb": torch.ones(1).expand(50_000_000)}, tmp_path / "bomb.pth")  # 4 bytes -> 200 MB
    with pytest.raises(BadInputError, match="expands"):
        read_checkpoint(tmp_path / "bomb.pth")


def test_legacy_checkpoint_written_with_another_pickle_protocol(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    got = read_checkpoint(path)
    assert got.format == "torch-legacy" and torch.equal(got.obj["w"], torch.ones(2))


def test_model_and_ema_wrappers_with_argparse_namespace(tmp_path):
    state = _state_dict()
    ema = collections.OrderedDict((k, v.clone()) for k, v in state.items())
    args = argparse.Namespace(lr=0.1, model="mscan_t")
    torch.save({"model": state, "state_dict_ema": ema, "args": args, "epoch": 299}, tmp_path / "in1k.pth")

    got = read_checkpoint(tmp_path / "in1k.pth").obj

    _assert_same_tensors(state, got["model"])
    _assert_same_tensors(ema, got["state_dict_ema"])
    assert got["epoch"] == 299
    assert isinstance(got["args"], Placeholder) and got["args"].qualname == "argparse.Namespace"
    assert got["args"].state == {"lr": 0.1, "model": "mscan_t"}


def test_safetensors_round_trip_with_metadata(tmp_path):
    state = {k: v.contiguous() for k, v in _state_dict().items()}
    path = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(state, path, metadata={"format": "pt", "variant": "t"})

    got = read_checkpoint(path)

    assert got.format == "safetensors" and got.metadata == {"format": "pt", "variant": "t"}
    assert got.sha256 == sha256_file(path)
    assert set(got.obj) == set(state)
    for key, value in state.items():
        assert got.obj[key].dtype == value.dtype and torch.equal(got.obj[key], value)


@pytest.mark.parametrize("trailer", [True, False], ids=["with-sha1-trailer", "plain-pickle"])
def test_jittor_pkl_numpy_arrays_become_tensors(tmp_path, trailer):
    arrays = {
        "backbone.block1.0.attn.proj_1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "backbone.block1.0.norm1.running_var": np.ones(3, dtype=np.float32),
        "decode_head.conv_seg.bias": np.arange(5, dtype=np.float64),
        "ids": np.array([[1, 2], [3, 4]], dtype=np.int64),
    }
    path = _write(tmp_path / "jseg.pkl", _jittor_bytes(arrays, trailer=trailer))

    got = read_checkpoint(path)

    assert got.format == "jittor-pkl" and got.sha256 == sha256_file(path)
    for key, array in arrays.items():
        assert isinstance(got.obj[key], torch.Tensor)
        assert torch.equal(got.obj[key], torch.from_numpy(array)), key


def test_jittor_pkl_with_wrong_sha1_is_corrupt(tmp_path):
    data = bytearray(_jittor_bytes({"w": np.ones(3, dtype=np.float32)}))
    data[-9] ^= 0xFF  # last byte of the SHA-1
    path = _write(tmp_path / "bad.pkl", bytes(data))
    with pytest.raises(BadInputError) as excinfo:
        read_checkpoint(path)
    assert "corrupt" in _one_line_error(excinfo, path)


def test_numpy_values_of_every_kind(tmp_path):
    values = {
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "zero_d": np.array(2.5),
        "half": np.array([1.5, -2.0], dtype=np.float16),
        "flags": np.array([True, False]),
        "none": np.zeros((0, 3), dtype=np.float32),
        "names": np.array(["road", "sky"]),
        "objects": np.array([{"a": 1}, None], dtype=object),
        "f64": np.float64(0.25),
        "i64": np.int64(-3),
        "b": np.bool_(True),
        "s": np.str_("bdd"),
    }
    for protocol in (2, 4, 5):
        got = read_checkpoint(_write(tmp_path / f"np{protocol}.pkl", _jittor_bytes(values, protocol=protocol))).obj
        assert torch.equal(got["big_endian"], torch.arange(6.0).reshape(2, 3))
        assert torch.equal(got["fortran"], torch.arange(6, dtype=torch.int32).reshape(2, 3))
        assert got["zero_d"].shape == () and got["zero_d"].item() == 2.5
        assert got["half"].dtype == torch.float16 and got["flags"].tolist() == [True, False]
        assert got["none"].shape == (0, 3)
        assert got["names"] == ["road", "sky"] and got["objects"] == [{"a": 1}, None]
        assert (got["f64"], got["i64"], got["b"], got["s"]) == (0.25, -3, True, "bdd")
        assert type(got["f64"]) is float and type(got["i64"]) is int


def test_plain_pickle_of_torch_tensors(tmp_path):
    """``pickle.dump`` of tensors nests torch.save blobs; they are read by the same safe reader."""
    state = {"w": torch.randn(2, 3), "t": torch.arange(6).reshape(2, 3).t()}
    got = read_checkpoint(_write(tmp_path / "plain.pkl", pickle.dumps(state, protocol=4))).obj
    _assert_same_tensors(state, got)


def test_numpy_1x_module_names_are_understood(tmp_path):
    data = pickle.dumps({"w": np.arange(3.0), "s": np.float32(1.5)}, protocol=2)
    old = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert old != data or b"numpy.core.multiarray" in data
    got = read_checkpoint(_write(tmp_path / "np1.pkl", old)).obj
    assert torch.equal(got["w"], torch.arange(3.0, dtype=torch.float64)) and got["s"] == 1.5


def test_format_comes_from_content_not_extension(tmp_path):
    torch.save({"w": torch.ones(1)}, tmp_path / "really_zip.pkl")
    safetensors.torch.save_file({"w": torch.ones(1)}, tmp_path / "really_safetensors.pth")
    _write(tmp_path / "really_jittor.safetensors", _jittor_bytes({"w": np.ones(1)}))
    assert read_checkpoint(tmp_path / "really_zip.pkl").format == "torch-zip"
    assert read_checkpoint(tmp_path / "really_safetensors.pth").format == "safetensors"
    assert read_checkpoint(tmp_path / "really_jittor.safetensors").format == "jittor-pkl"


# --------------------------------------------------------------------------- mmengine-style checkpoint


class _ImportSpy:
    """A meta-path finder that records (and blocks) imports of the packages we faked."""

    def __init__(self, roots):
        self.roots, self.attempts = set(roots), []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            self.attempts.append(name)
            raise ImportError(f"{name} must not be imported")
        return None


def _fake_mmengine(monkeypatch):
    """Install mmengine.logging.history_buffer.HistoryBuffer just long enough to pickle one."""
    modname = "mmengine.logging.history_buffer"

    def min(self):  # noqa: A001 - mirrors HistoryBuffer.min
        return 0.0

    def mean(self):
        return 0.0

    min.__qualname__, mean.__qualname__ = "HistoryBuffer.min", "HistoryBuffer.mean"
    for fn in (min, mean):
        fn.__module__ = modname
    history_buffer = type("HistoryBuffer", (), {"__module__": modname, "min": min, "mean": mean})
    module = types.ModuleType(modname)
    module.HistoryBuffer = history_buffer
    for name in ("mmengine", "mmengine.logging"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, modname, module)
    return history_buffer


def _mmengine_checkpoint(monkeypatch, path):
    history_buffer = _fake_mmengine(monkeypatch)
    buffer = history_buffer()
    buffer.__dict__.update(
        max_length=1000000,
        _log_history=np.array([0.5, 0.25]),
        _count_history=np.array([1, 1]),
        statistics_methods={"min": history_buffer.min, "mean": history_buffer.mean},  # getattr(cls, ...)
    )
    state = _state_dict()
    torch.save(
        {
            "meta": {"seed": np.int64(42), "lr": np.float64(0.00006), "dataset_meta": {"classes": ("a", "b")},
                     "args": argparse.Namespace(work_dir="work_dirs/x")},
            "state_dict": state,
            "message_hub": {"log_scalars": collections.OrderedDict([("train/loss", buffer)]),
                            "runtime_info": collections.OrderedDict(iter=160000)},
            "param_schedulers": [{"eta_min": 0.0, "last_step": 1500}],
        },
        path,
    )
    for name in ("mmengine.logging.history_buffer", "mmengine.logging", "mmengine"):
        monkeypatch.delitem(sys.modules, name)
    return state


def test_mmengine_checkpoint_reads_without_mmengine(tmp_path, monkeypatch):
    path = tmp_path / "iter_160000.pth"
    state = _mmengine_checkpoint(monkeypatch, path)
    spy = _ImportSpy({"mmengine"})
    monkeypatch.setattr(sys, "meta_path", [spy, *sys.meta_path])
    with pytest.raises(pickle.UnpicklingError):  # what torch itself does with such a file
        torch.load(path, weights_only=True)

    got = read_checkpoint(path).obj

    _assert_same_tensors(state, got["state_dict"])
    assert got["meta"]["seed"] == 42 and got["meta"]["lr"] == 0.00006
    assert got["meta"]["args"].state == {"work_dir": "work_dirs/x"}
    buffer = got["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Placeholder)
    assert buffer.qualname == "mmengine.logging.history_buffer.HistoryBuffer"
    assert torch.equal(buffer.state["_log_history"], torch.tensor([0.5, 0.25], dtype=torch.float64))
    method = buffer.state["statistics_methods"]["min"]
    assert issubclass(method, Placeholder) and method.name == "HistoryBuffer.min"
    assert got["message_hub"]["runtime_info"]["iter"] == 160000
    assert got["param_schedulers"] == [{"eta_min": 0.0, "last_step": 1500}]
    assert "mmengine" not in sys.modules and spy.attempts == []


def test_reading_never_goes_through_torch_load(tmp_path, monkeypatch):
    """TORCH_FORCE_WEIGHTS_ONLY_LOAD (or any torch.load change) cannot alter what we read."""
    path = tmp_path / "m.pth"
    state = _mmengine_checkpoint(monkeypatch, path)
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)
    _assert_same_tensors(state, read_checkpoint(path).obj["state_dict"])


# --------------------------------------------------------------------------- hostile pickles


def _marker_reducers(marker):
    """Objects whose unpickling would create ``marker`` if anything were executed."""
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    reducers = {
        "os.system": (os.system, (cmd,)),
        "builtins.eval": (eval, (code,)),
        "builtins.exec": (exec, (code,)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
        "builtins.open": (open, (str(marker), "w")),
    }
    return {name: type("Evil", (), {"__reduce__": lambda self, r=r: r})() for name, r in reducers.items()}


def _raw_pickles(marker):
    """Hand-written pickles for what __reduce__ cannot express directly."""
    m = str(marker).encode()
    return {
        "getattr(__import__('os'), 'system')": (
            b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'touch " + m + b"'\ntR."
        ),
        "getattr(os.path, 'os')": b"cbuiltins\ngetattr\n(cos\npath\nS'os'\ntR.",
        "getattr on a real class": b"cbuiltins\ngetattr\n(ccollections\nOrderedDict\nS'fromkeys'\ntR.",
        "importlib.import_module": b"cimportlib\nimport_module\n(S'os'\ntR.",
        "pickle.loads": b"c_pickle\nloads\n(C\x05hello\ntR.",
        "torch.load": b"ctorch\nload\n(S'" + m + b"'\ntR.",
        "shutil.rmtree": b"cshutil\nrmtree\n(S'" + m + b"'\ntR.",
        "posix.system via __builtin__ alias": b"c__builtin__\n__import__\n(S'posix'\ntR.",
        "builtins.range expansion": b"c__builtin__\nset\nc__builtin__\nrange\n(J\x00\xe4\x0bTtRR.",
    }


@pytest.mark.parametrize("container", ["zip", "legacy", "jittor"])
def test_malicious_objects_are_refused_and_never_run(tmp_path, container):
    marker = tmp_path / "pwned"
    for name, evil in _marker_reducers(marker).items():
        obj = {"state_dict": {"w": np.ones(2) if container == "jittor" else torch.ones(2)},
               "meta": {"hooks": [evil]}}  # nested, not at the top
        path = tmp_path / f"{container}.bin"
        if container == "jittor":
            _write(path, _jittor_bytes(obj))
        else:
            torch.save(obj, path, _use_new_zipfile_serialization=container == "zip")
        with pytest.raises(UnsafePickleError) as excinfo:
            read_checkpoint(path)
        text = _one_line_error(excinfo, path)
        assert name.split(".")[1] in text and "nothing was executed" in text
        assert not marker.exists(), name


@pytest.mark.parametrize("name", list(_raw_pickles("m")))
def test_handwritten_attacks_are_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "evil.pkl", b"\x80\x02" + _raw_pickles(marker)[name])
    with pytest.raises(UnsafePickleError) as excinfo:
        read_checkpoint(path)
    _one_line_error(excinfo, path)
    assert not marker.exists()


def test_unknown_callables_become_inert_placeholders_without_import(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    touch = f"open({str(marker)!r}, 'w').close()"
    (tmp_path / "trojan_mod.py").write_text(f"{touch}\ndef run(*args):\n    {touch}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path / "c.pkl", b"\x80\x02ctrojan_mod\nrun\n(S'x'\ntR.")

    got = read_checkpoint(path).obj

    assert isinstance(got, Placeholder) and got.qualname == "trojan_mod.run" and got.args == ("x",)
    assert not marker.exists() and "trojan_mod" not in sys.modules


def test_placeholders_survive_deepcopy(tmp_path, monkeypatch):
    import copy

    _mmengine_checkpoint(monkeypatch, tmp_path / "m.pth")
    hub = read_checkpoint(tmp_path / "m.pth").obj["message_hub"]
    clone = copy.deepcopy(hub)["log_scalars"]["train/loss"]
    original = hub["log_scalars"]["train/loss"]
    assert type(clone) is type(original) and clone is not original
    assert clone.state.keys() == original.state.keys() and clone.args == original.args == ()


@pytest.mark.parametrize("target", ["OrderedDict", "tensor"])
def test_build_on_real_objects_is_refused(tmp_path, target):
    """BUILD would run a real ``__setstate__`` (Tensor's calls ``set_``) or fill a real ``__dict__``."""
    if target == "OrderedDict":
        data = b"\x80\x02ccollections\nOrderedDict\n)R}(S'x'\nK\x01ub."
    else:
        data = pickle.dumps(torch.ones(2), protocol=2)[:-1] + b"}b."
    with pytest.raises(UnsafePickleError, match="BUILD"):
        read_checkpoint(_write(tmp_path / "build.pkl", data))


def test_a_huge_memo_index_costs_no_memory(tmp_path):
    """CPython's C unpickler would zero-fill a 2 GiB memo array for these 9 bytes."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = read_checkpoint(_write(tmp_path / "memo.pkl", b"\x80\x02Nr\x00\x00\x00\x08."))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert got.obj is None and grown_kib < 512 * 1024


def test_placeholder_getattr_is_inert_and_dunders_are_refused(tmp_path):
    ok = b"\x80\x02cbuiltins\ngetattr\n(cmmcv.utils\nConfig\nS'fromfile'\ntR(S'cfg.py'\ntR."
    got = read_checkpoint(_write(tmp_path / "ok.pkl", ok)).obj
    assert isinstance(got, Placeholder) and got.name == "Config.fromfile" and got.args == ("cfg.py",)
    bad = b"\x80\x02cbuiltins\ngetattr\n(cmmcv.utils\nConfig\nS'__init__'\ntR."
    with pytest.raises(UnsafePickleError):
        read_checkpoint(_write(tmp_path / "bad.pkl", bad))


# --------------------------------------------------------------------------- bad inputs


def _bad_inputs(tmp_path):
    torch.save({"w": torch.randn(64)}, tmp_path / "good.pth")
    good_zip = (tmp_path / "good.pth").read_bytes()
    torch.save({"w": torch.randn(64)}, tmp_path / "good_legacy.pth", _use_new_zipfile_serialization=False)
    good_legacy = (tmp_path / "good_legacy.pth").read_bytes()
    good_st = safetensors.torch.save({"w": torch.randn(64)})
    good_pkl = _jittor_bytes({"w": np.ones(64, dtype=np.float32)}, trailer=False)
    no_pickle = io.BytesIO()
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("readme.txt", "hello")
    script = io.BytesIO()
    with zipfile.ZipFile(script, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
    (tmp_path / "a_directory").mkdir()
    return {
        "missing": None,
        "a_directory": None,
        "empty": b"",
        "truncated_zip": good_zip[: len(good_zip) // 2],
        "truncated_legacy": good_legacy[:-10],
        "truncated_safetensors": good_st[:-7],
        "truncated_pickle": good_pkl[: len(good_pkl) // 2],
        "random_bytes": random.Random(0).randbytes(4096),
        "text": b"model = dict(type='EncoderDecoder')\n",
        "zip_without_checkpoint": no_pickle.getvalue(),
        "torchscript_archive": script.getvalue(),
    }


def test_bad_inputs_give_one_line_bad_input_errors(tmp_path):
    for name, data in _bad_inputs(tmp_path).items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(BadInputError) as excinfo:
            read_checkpoint(path)
        assert not isinstance(excinfo.value, UnsafePickleError), name
        _one_line_error(excinfo, path)


def test_bad_input_messages_name_the_problem(tmp_path):
    cases = _bad_inputs(tmp_path)
    expected = {"missing": "no such file", "a_directory": "directory", "empty": "empty",
                "truncated_zip": "zip", "truncated_pickle": "ends early", "truncated_safetensors": "truncated",
                "random_bytes": "not a checkpoint", "torchscript_archive": "TorchScript"}
    for name, phrase in expected.items():
        path = tmp_path / name
        if cases[name] is not None:
            path.write_bytes(cases[name])
        with pytest.raises(BadInputError, match=phrase):
            read_checkpoint(path)


def test_corrupted_tensor_bytes_fail_the_zip_crc(tmp_path):
    path = tmp_path / "flip.pth"
    torch.save({"w": torch.zeros(1000)}, path)
    data = bytearray(path.read_bytes())
    data[data.index(b"\x00" * 4000) + 400] ^= 0x01  # inside the stored tensor bytes
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="CRC"):
        read_checkpoint(path)


# --------------------------------------------------------------------------- fuzz


def _rezip_with(data: bytes, mutate, *, every_record: bool = False) -> bytes:
    """Rewrite a torch zip with data.pkl (or every record) changed and valid CRCs."""
    source, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            payload = source.read(info)
            if every_record:
                payload = mutate(info.filename, payload)
            elif info.filename.endswith("data.pkl"):
                payload = mutate(payload)
            archive.writestr(info.filename, payload)
    return out.getvalue()


def _mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.choice(["flip", "truncate", "insert", "overwrite"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)):]
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    else:
        at = rng.randrange(len(data))
        data[at : at + 8] = rng.choice([b"\xff" * 8, b"\x00" * 8, rng.randbytes(8)])
    return bytes(data)


def test_fuzzed_files_only_ever_give_checkpoints_or_bad_input_errors(tmp_path):
    obj = {"meta": {"classes": ("a", "b"), "n": np.float64(1.5), "arr": np.arange(4)},
           "state_dict": collections.OrderedDict(w=torch.randn(3, 4), b=torch.arange(3), m=torch.tensor([True]))}
    torch.save(obj, tmp_path / "z.pth")
    torch.save(obj, tmp_path / "l.pth", _use_new_zipfile_serialization=False)
    seeds = {
        "zip": (tmp_path / "z.pth").read_bytes(),
        "legacy": (tmp_path / "l.pth").read_bytes(),
        "safetensors": safetensors.torch.save(obj["state_dict"], metadata={"k": "v"}),
        "jittor": _jittor_bytes({"w": np.ones((2, 3), dtype=np.float32), "meta": {"x": [1, 2.5, "s"]}}),
        "pickle": _jittor_bytes(obj["meta"], trailer=False),
    }
    rng = random.Random(20240607)
    outcomes = collections.Counter()
    for case in range(200):
        kind = rng.choice([*seeds, "zip-pickle"])
        if kind == "zip-pickle":
            data = _rezip_with(seeds["zip"], lambda payload: _mutate(rng, payload))
        else:
            data = _mutate(rng, seeds[kind])
        path = _write(tmp_path / f"fuzz{case}", data)
        try:
            result = read_checkpoint(path)
        except BadInputError as exc:
            assert "\n" not in str(exc), (kind, case)
            outcomes["rejected"] += 1
        else:
            assert isinstance(result, Checkpoint) and result.format in containers.FORMATS
            outcomes["read"] += 1
    assert outcomes["rejected"] > 50  # the mutations do break things...
    assert outcomes["read"] > 0  # ...and some still decode (e.g. truncated-after-STOP or unused bytes)


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize(
    "header, data",
    [
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\x00" * 8),  # gap before a
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\x00" * 8),  # overlap
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\x00" * 8),  # shape vs bytes
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\x00" * 8),  # trailing bytes
        ({"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, b"\x00" * 4),  # unknown dtype
        ({"__metadata__": {"n": 3}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\x00" * 4),
    ],
    ids=["gap", "overlap", "size", "trailing", "dtype", "metadata"],
)
def test_invalid_safetensors_headers_are_rejected_like_the_library_does(tmp_path, header, data):
    raw = _safetensors_bytes(header, data)
    with pytest.raises(Exception):  # noqa: B017 - the reference implementation refuses it too
        safetensors.torch.load(raw)
    with pytest.raises(BadInputError) as excinfo:
        read_checkpoint(_write(tmp_path / "bad.safetensors", raw))
    _one_line_error(excinfo)


def test_safetensors_reader_agrees_with_the_safetensors_library(tmp_path):
    """Our zero-copy parser accepts exactly what safetensors.torch.load accepts, with equal bytes."""
    seed = safetensors.torch.save({"w": torch.randn(3, 4), "i": torch.arange(3), "m": torch.tensor([True, False]),
                                   "h": torch.ones(2, dtype=torch.bfloat16)}, metadata={"k": "v"})
    rng = random.Random(7)
    for case in range(300):
        data = _mutate(rng, seed)
        try:
            expected = safetensors.torch.load(data)
        except Exception:  # noqa: BLE001 - any rejection by the library
            expected = None
        path = _write(tmp_path / f"st{case}", data)
        try:
            got = read_checkpoint(path)
        except BadInputError:
            got = None
        if got is not None and got.format != "safetensors":
            continue  # a mutation that made it look like another format
        assert (got is None) == (expected is None), case
        if got is not None:
            assert set(got.obj) == set(expected)
            for key, value in expected.items():
                value = value.view(torch.uint8) != 0 if value.dtype == torch.bool else value  # we normalise bools
                assert got.obj[key].dtype == value.dtype and got.obj[key].shape == value.shape, (case, key)
                assert _raw_bytes(got.obj[key]) == _raw_bytes(value), (case, key)  # NaN-safe


# --------------------------------------------------------------------------- writers


def _no_temp_files(directory) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_write_safetensors_handles_views_and_loads_back(tmp_path):
    state = _state_dict()  # non-contiguous, shared storage, fp16, bool, empty
    path = tmp_path / "out.safetensors"

    digest = write_safetensors(path, state, {"format": "pt", "source_sha256": "ab" * 32})

    assert digest == sha256_file(path)
    loaded = safetensors.torch.load_file(path)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    with safetensors.safe_open(path, "pt") as handle:
        assert handle.metadata() == {"format": "pt", "source_sha256": "ab" * 32}
    again = read_checkpoint(path)
    assert again.metadata["format"] == "pt" and again.sha256 == digest
    assert all(t.data_ptr() % t.element_size() == 0 for t in again.obj.values() if t.numel())


def test_writers_refuse_to_overwrite_unless_forced(tmp_path):
    st_path, pth_path = tmp_path / "a.safetensors", tmp_path / "a.pth"
    st_path.write_bytes(b"keep")
    pth_path.write_bytes(b"keep")
    with pytest.raises(BadInputError, match="exists"):
        write_safetensors(st_path, {"w": torch.ones(1)}, {})
    with pytest.raises(BadInputError, match="exists"):
        write_pth(pth_path, {"w": torch.ones(1)})
    assert st_path.read_bytes() == b"keep" and pth_path.read_bytes() == b"keep"
    write_safetensors(st_path, {"w": torch.ones(1)}, {}, force=True)
    write_pth(pth_path, {"w": torch.ones(1)}, force=True)
    assert torch.equal(safetensors.torch.load_file(st_path)["w"], torch.ones(1))
    assert torch.equal(torch.load(pth_path, weights_only=True)["w"], torch.ones(1))


def test_failed_writes_leave_the_old_file_and_no_temp_files(tmp_path, monkeypatch):
    st_path, pth_path = tmp_path / "a.safetensors", tmp_path / "a.pth"
    st_path.write_bytes(b"old")
    pth_path.write_bytes(b"old")

    def half_then_fail(header, entries):
        yield header
        raise RuntimeError("disk full")

    def torch_save_fails(obj, handle, **kwargs):
        handle.write(b"PK\x03\x04 partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(writing, "_safetensors_chunks", half_then_fail)
    monkeypatch.setattr(torch, "save", torch_save_fails)
    with pytest.raises(RuntimeError):
        write_safetensors(st_path, {"w": torch.ones(3)}, {}, force=True)
    with pytest.raises(RuntimeError):
        write_pth(pth_path, {"w": torch.ones(3)}, force=True)
    assert st_path.read_bytes() == b"old" and pth_path.read_bytes() == b"old"
    assert _no_temp_files(tmp_path)


def test_write_pth_output_loads_with_weights_only(tmp_path, monkeypatch):
    source = tmp_path / "mm.pth"
    state = _mmengine_checkpoint(monkeypatch, source)
    read = read_checkpoint(source).obj
    out = tmp_path / "mmseg.pth"
    meta = {"dataset_meta": {"classes": ("a", "b"), "palette": [[0, 0, 0], [1, 1, 1]]}, "seed": read["meta"]["seed"]}

    digest = write_pth(out, {"meta": meta, "state_dict": read["state_dict"]})

    assert digest == sha256_file(out)
    loaded = torch.load(out, weights_only=True)
    assert loaded["meta"] == meta
    _assert_same_tensors(state, loaded["state_dict"])
    assert type(loaded["state_dict"]) is collections.OrderedDict
    assert read_checkpoint(out).sha256 == digest


def test_write_pth_keeps_shared_containers_shared(tmp_path):
    shared = {"classes": ("a", "b")}
    write_pth(tmp_path / "s.pth", {"meta": shared, "again": shared, "w": torch.ones(2)})
    loaded = torch.load(tmp_path / "s.pth", weights_only=True)
    assert loaded["meta"] is loaded["again"]


def test_writers_reject_what_they_cannot_represent(tmp_path):
    with pytest.raises(BadInputError, match="weights_only"):
        write_pth(tmp_path / "x.pth", {"meta": {"args": Placeholder("argparse", "Namespace")}})
    with pytest.raises(BadInputError, match="not a dense tensor"):
        write_safetensors(tmp_path / "x.safetensors", {"w": [1.0]}, {})
    with pytest.raises(BadInputError, match="metadata"):
        write_safetensors(tmp_path / "x.safetensors", {"w": torch.ones(1)}, {"n": 3})
    assert _no_temp_files(tmp_path) and not list(tmp_path.iterdir())


def test_real_state_dict_with_metadata_is_read(tmp_path):
    """``model.state_dict()`` carries ``_metadata``, pickled as BUILD on an OrderedDict."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    state = model.state_dict()
    assert hasattr(state, "_metadata")
    for legacy in (False, True):
        path = tmp_path / f"sd{legacy}.pth"
        torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=not legacy)
        got = read_checkpoint(path).obj["state_dict"]
        assert list(got) == list(state)
        assert all(torch.equal(got[k], state[k]) for k in state)
        assert got._metadata == state._metadata
