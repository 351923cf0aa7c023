"""Small crafted files that once made the reader hang or exhaust memory, and a measuring driver.

Every file here is self-written (no real checkpoint is this shape); each reproduces one attack:

* shared-reference (DAG) pickles: levels that are each a tuple (or list, or dict) of two references to
  the level below; 40 levels are ~1 KB of pickle but 2**40 paths, so anything that walks, hashes or
  ``repr``s them without memoising by identity never finishes;
* a zip bomb: a ~2 MB ``.pth`` whose ``archive/byteorder`` member inflates to 2 GiB;
* reference amplification: one 4 MiB payload referred to N times (the same numpy bytes in N arrays, the
  same bytes in N nested torch blobs, the same misaligned storage rebuilt N times by
  ``_rebuild_tensor_v3``), which costs N copies if the reader copies per reference;
* nesting a million levels deep.

``python -m tests.conversion.hostile_files [--as-limit-gib G] [CASE...]`` writes them to a temporary
folder and runs ``segnext-convert`` on each (see :func:`measure`), printing a table of exit code, CPU
seconds, wall seconds and peak RSS per case.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

DAG_DEPTH = 40
PAYLOAD = 4 << 20  # bytes of the one payload the amplification cases refer to again and again
BOMB_SIZE = 2 << 30  # what the zip bomb's byteorder member inflates to
JITTOR_MAGIC = b"HCAJSLHD"


# --------------------------------------------------------------------------- a pickle opcode writer


class Ops:
    """Protocol-4 opcodes written by hand (pickle.dumps cannot express shared crafted structures)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(b"\x80\x04")
        self.memo = 0

    def raw(self, data: bytes) -> "Ops":
        self.out.write(data)
        return self

    def text(self, value: str) -> "Ops":
        data = value.encode()
        return self.raw(b"\x8c" + bytes([len(data)]) + data if len(data) < 256
                        else b"X" + struct.pack("<I", len(data)) + data)

    def bytes_(self, value: bytes) -> "Ops":
        return self.raw(b"B" + struct.pack("<I", len(value)) + value)

    def int_(self, value: int) -> "Ops":
        return self.raw(b"J" + struct.pack("<i", value))

    def glob(self, module: str, name: str) -> "Ops":
        return self.text(module).text(name).raw(b"\x93")

    def put(self) -> int:
        """MEMOIZE the top of the stack; returns its memo index."""
        self.raw(b"\x94")
        self.memo += 1
        return self.memo - 1

    def get(self, index: int) -> "Ops":
        return self.raw(b"j" + struct.pack("<I", index))

    def pop(self) -> "Ops":
        return self.raw(b"0")

    def stop(self) -> bytes:
        return self.out.getvalue() + b"."


def jittor_file(pickle_bytes: bytes) -> bytes:
    """``jt.save``'s layout: the pickle, its SHA-1 and the magic."""
    return pickle_bytes + hashlib.sha1(pickle_bytes).digest() + JITTOR_MAGIC


def _dag(ops: Ops, kind: str, depth: int = DAG_DEPTH) -> int:
    """Build ``depth`` levels, each a ``kind`` of two references to the level below; memo index of the top."""
    below = ops.text("leaf").put()
    ops.pop()
    for _ in range(depth):
        if kind == "tuple":
            ops.get(below).get(below).raw(b"\x86")  # TUPLE2
        elif kind == "list":
            ops.raw(b"](").get(below).get(below).raw(b"e")  # EMPTY_LIST MARK .. APPENDS
        else:
            ops.raw(b"}(").text("a").get(below).text("b").get(below).raw(b"u")  # EMPTY_DICT .. SETITEMS
        below = ops.put()
        ops.pop()
    return below


# --------------------------------------------------------------------------- zip containers written by hand


def _zip(members: List[tuple]) -> bytes:
    """A zip of ``(name, payload, method, declared_size, crc, misalign)``; payload is already compressed.

    Written by hand so a member can declare any size, and so a stored member's data can start at
    ``misalign`` bytes past a 64-byte boundary (torch aligns them to 64).
    """
    out, central = io.BytesIO(), io.BytesIO()
    for name, payload, method, size, crc, misalign in members:
        offset = out.tell()
        name_b = name.encode()
        pad = 0 if misalign is None else (misalign - (offset + 30 + len(name_b))) % 64
        out.write(struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload), size,
                              len(name_b), pad) + name_b + b"\x00" * pad + payload)
        central.write(struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(payload),
                                  size, len(name_b), 0, 0, 0, 0, 0, offset) + name_b)
    start, count = out.tell(), len(members)
    out.write(central.getvalue())
    out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(central.getvalue()), start, 0))
    return out.getvalue()


def _stored(name: str, payload: bytes, misalign: Optional[int] = 0) -> tuple:
    return (name, payload, zipfile.ZIP_STORED, len(payload), zlib.crc32(payload), misalign)


def _torch_zip(data_pkl: bytes, records: Dict[str, bytes], *, misalign: int = 0,
               byteorder: Optional[tuple] = None, extra: Optional[tuple] = None) -> bytes:
    members = [_stored("archive/data.pkl", data_pkl, None)]
    members.append(byteorder or _stored("archive/byteorder", b"little", None))
    for key, payload in records.items():
        members.append(_stored(f"archive/data/{key}", payload, misalign))
    members.append(_stored("archive/version", b"3\n", None))
    if extra:
        members.append(extra)
    return _zip(members)


def _deflated_zeros(total: int, chunk: int = 1 << 20) -> bytes:
    """Raw deflate of ``total`` zero bytes in ~1 KB per MiB, without deflating 2 GiB: after a full
    flush the compressor restarts from scratch, so every further MiB compresses to the same block."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(b"\x00" * chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    return block * (total // chunk) + comp.flush(zlib.Z_FINISH)


# --------------------------------------------------------------------------- the cases


def _state_dict_pickle(ops: Ops, build_value: Callable[[Ops, int], None], count: int) -> bytes:
    """``{'state_dict': {'w0': v0, ...}}`` with each value pushed by ``build_value``."""
    ops.raw(b"}").text("state_dict").raw(b"}(")
    for index in range(count):
        ops.text(f"w{index}")
        build_value(ops, index)
    return ops.raw(b"us").stop()


def dag_dict_key() -> bytes:
    ops = Ops()
    top = _dag(ops, "tuple")
    return jittor_file(ops.raw(b"}").get(top).int_(1).raw(b"s").stop())  # {dag: 1}


def dag_frozenset() -> bytes:
    ops = Ops()
    top = _dag(ops, "tuple")
    return jittor_file(ops.raw(b"(").get(top).raw(b"\x91").stop())  # frozenset({dag})


def dag_ordered_dict_arg() -> bytes:
    ops = Ops()
    top = _dag(ops, "tuple")
    ops.glob("collections", "OrderedDict").raw(b"]").get(top).raw(b"a\x85R")  # OrderedDict([dag])
    return jittor_file(ops.stop())


def _call(ops: Ops, module: str, name: str, args: Iterable[Callable[[Ops], None]]) -> Ops:
    ops.glob(module, name).raw(b"(")
    for push in args:
        push(ops)
    return ops.raw(b"tR")


def dag_allowed_function_arg() -> bytes:
    """``_rebuild_from_type_v2(dag, Tensor, (), None)``: a membership test would hash the DAG."""
    ops = Ops()
    top = _dag(ops, "tuple")
    _call(ops, "torch._tensor", "_rebuild_from_type_v2",
          [lambda o: o.get(top), lambda o: o.glob("torch", "Tensor"), lambda o: o.raw(b")"), lambda o: o.raw(b"N")])
    return jittor_file(ops.stop())


def dag_numpy_subtype() -> bytes:
    """``numpy _reconstruct(dag, ...)``: the refusal message once quoted the argument with ``!r``."""
    ops = Ops()
    top = _dag(ops, "tuple")
    _call(ops, "numpy.core.multiarray", "_reconstruct", [lambda o: o.get(top), lambda o: o.raw(b"K\x00\x85"),
                                                          lambda o: o.raw(b"C\x01b")])
    return jittor_file(ops.stop())


def dag_global_name() -> bytes:
    """STACK_GLOBAL whose module is the DAG (a non-text name, quoted in the refusal)."""
    ops = Ops()
    top = _dag(ops, "tuple")
    return jittor_file(ops.get(top).text("x").raw(b"\x93").stop())


def dag_jittor_var_arg() -> bytes:
    """``jittor.jittor_core.Var(dag)``: the Var rebuilder must refuse it in bounded time."""
    ops = Ops()
    top = _dag(ops, "list")
    _call(ops, "jittor", "jittor_core.Var", [lambda o: o.get(top)])
    return jittor_file(ops.stop())


def _tiny_segnext_t(ops: Ops) -> None:
    """Push a state dict with just the keys and shapes detection reads (SegNeXt-T, 150 classes)."""
    keys = [(f"backbone.norm{i + 1}.weight", dim) for i, dim in enumerate((32, 64, 160, 256))]
    keys += [(f"backbone.block{s + 1}.{b}.mlp.dwconv.dwconv.weight", 1)
             for s, depth in enumerate((3, 3, 5, 2)) for b in range(depth)]
    keys.append(("decode_head.conv_seg.weight", 150))
    ops.raw(b"}(")
    for key, count in keys:
        ops.text(key)
        raw = ops.bytes_(b"\x00" * 4 * count).put()
        ops.pop()
        _numpy_array(ops, raw, count)
    ops.raw(b"u")


def dag_in_config() -> bytes:
    """A JSeg-runner-shaped file (detectable SegNeXt-T keys) whose ``meta.config`` holds a DAG of dicts
    beside a LightHamHead with MD_R: the MD_R reader walks it, then the key check refuses the file."""
    ops = Ops()
    top = _dag(ops, "dict")
    ops.raw(b"}(").text("meta").raw(b"}(").text("config").raw(b"}(").text("dag").get(top)
    ops.text("model").raw(b"}(").text("decode_head").raw(b"}(").text("type").text("LightHamHead")
    ops.text("ham_kwargs").raw(b"}(").text("MD_R").int_(8).raw(b"uuuuu")
    ops.text("model")
    _tiny_segnext_t(ops)
    return jittor_file(ops.raw(b"u").stop())


def long_key() -> bytes:
    """Detectable SegNeXt-T keys plus one 950 KB key of repeated ``.mlp.dwconv.dwconv.`` ending in a
    newline: a key-map template (``{stem}.mlp.dwconv.dwconv.{param}``) fails on it in quadratic time."""
    ops = Ops()
    ops.raw(b"}(").text("state_dict")
    _tiny_segnext_t(ops)
    key = ".mlp.dwconv.dwconv." * 50_000 + "x\n"
    raw = ops.bytes_(b"\x00" * 4).put()
    ops.pop()
    ops.text(key)
    _numpy_array(ops, raw, 1)
    return jittor_file(ops.raw(b"su").stop())


def dag_storage_type() -> bytes:
    """A torch zip whose persistent id names the DAG as its storage type."""
    ops = Ops()
    top = _dag(ops, "tuple")
    ops.glob("torch._utils", "_rebuild_tensor_v2").raw(b"(")
    ops.raw(b"(").text("storage").get(top).text("0").text("cpu").raw(b"K\x01tQ")  # BINPERSID
    ops.raw(b"K\x00K\x01\x85K\x01\x85\x89").glob("collections", "OrderedDict").raw(b")R")
    data = ops.raw(b"tR").stop()
    return _torch_zip(data, {"0": b"\x00" * 4})


def dag_list_values() -> bytes:
    """A state dict whose values are all the same list DAG (walks must visit it once)."""
    ops = Ops()
    top = _dag(ops, "list")
    return jittor_file(_state_dict_pickle(ops, lambda o, i: o.get(top), 64))


def deep_nesting() -> bytes:
    """A list nested 200,000 levels deep (2 bytes a level; Python's recursion limit is 1,000)."""
    depth = 200_000
    return jittor_file(Ops().raw(b"]" * depth + b"a" * (depth - 1)).stop())


def many_objects() -> bytes:
    """A list of 500,010 distinct empty lists (1 byte each)."""
    return jittor_file(Ops().raw(b"](" + b"]" * 500_010 + b"e").stop())


def zip_bomb_byteorder() -> bytes:
    """The byteorder member declares 2 GiB, deflated to ~2 MB; everything else is a valid torch zip."""
    ops = Ops()
    data = ops.raw(b"}").stop()
    bomb = ("archive/byteorder", _deflated_zeros(BOMB_SIZE), zipfile.ZIP_DEFLATED, BOMB_SIZE, 0, None)
    return _torch_zip(data, {}, byteorder=bomb)


def _numpy_array(ops: Ops, raw_index: int, count: int, shape: Optional[tuple] = None) -> None:
    """numpy's own pickling of a float32 array (_reconstruct + BUILD), its bytes fetched from the memo."""
    _call(ops, "numpy.core.multiarray", "_reconstruct", [lambda o: o.glob("numpy", "ndarray"),
                                                          lambda o: o.raw(b"K\x00\x85"), lambda o: o.raw(b"C\x01b")])
    ops.raw(b"(K\x01(")
    for dim in shape or (count,):
        ops.int_(dim)
    ops.raw(b"t")
    _call(ops, "numpy", "dtype", [lambda o: o.text("f4"), lambda o: o.raw(b"\x89\x88")])
    ops.raw(b"(K\x03").text("<").raw(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    ops.raw(b"\x89").get(raw_index).raw(b"tb")


def shared_numpy_bytes(refs: int) -> Callable[[], bytes]:
    """N numpy arrays built from the same 4 MiB bytes object (Jittor old form)."""

    def build() -> bytes:
        ops = Ops()
        raw = ops.bytes_(b"\x00" * PAYLOAD).put()
        ops.pop()
        return jittor_file(_state_dict_pickle(ops, lambda o, i: _numpy_array(o, raw, PAYLOAD // 4), refs))

    return build


def shared_numpy_bytes_reshaped(refs: int) -> Callable[[], bytes]:
    """N numpy arrays over the same 4 MiB bytes, in 231 different shapes: no two share a value, so
    each is a copy, and the copies must run out of allowance (not of memory)."""
    shapes = [(1 << a, 1 << b, 1 << (20 - a - b)) for a in range(21) for b in range(21 - a)]

    def build() -> bytes:
        ops = Ops()
        raw = ops.bytes_(b"\x00" * PAYLOAD).put()
        ops.pop()

        def value(o: Ops, index: int) -> None:
            _numpy_array(o, raw, PAYLOAD // 4, shapes[index % len(shapes)])

        return jittor_file(_state_dict_pickle(ops, value, refs))

    return build


def shared_jittor_var(refs: int) -> Callable[[], bytes]:
    """N ``jittor_core.Var(array)`` calls on the same array (Jittor new form)."""

    def build() -> bytes:
        ops = Ops()
        raw = ops.bytes_(b"\x00" * PAYLOAD).put()
        ops.pop()
        _numpy_array(ops, raw, PAYLOAD // 4)
        array = ops.put()
        ops.pop()
        return jittor_file(_state_dict_pickle(
            ops, lambda o, i: _call(o, "jittor", "jittor_core.Var", [lambda p: p.get(array)]), refs))

    return build


def shared_frombuffer(refs: int) -> Callable[[], bytes]:
    """N protocol-5 style ``numpy._frombuffer(same_bytes, ...)`` arrays."""

    def build() -> bytes:
        ops = Ops()
        raw = ops.bytes_(b"\x00" * PAYLOAD).put()
        ops.pop()
        dtype = _call(ops, "numpy", "dtype", [lambda o: o.text("f4"), lambda o: o.raw(b"\x89\x88")]).put()
        ops.pop()

        def value(o: Ops, index: int) -> None:
            _call(o, "numpy.core.numeric", "_frombuffer",
                  [lambda p: p.get(raw), lambda p: p.get(dtype), lambda p: p.int_(PAYLOAD // 4).raw(b"\x85"),
                   lambda p: p.text("C")])

        return jittor_file(_state_dict_pickle(ops, value, refs))

    return build


def shared_nested_blob(refs: int) -> Callable[[], bytes]:
    """N ``_rebuild_tensor_v2(torch.storage._load_from_bytes(same_blob), ...)``: how ``pickle.dumps(tensor)``
    stores data, the one 4 MiB blob (a torch zip holding one storage) referred to N times."""

    def build() -> bytes:
        inner = Ops().raw(b"(").text("storage").glob("torch", "FloatStorage").text("0").text("cpu") \
            .int_(PAYLOAD // 4).raw(b"tQ").stop()
        blob = _torch_zip(inner, {"0": b"\x00" * PAYLOAD})
        ops = Ops()
        raw = ops.bytes_(blob).put()
        ops.pop()
        odict = ops.glob("collections", "OrderedDict").raw(b")R").put()
        ops.pop()

        def value(o: Ops, index: int) -> None:
            _call(o, "torch._utils", "_rebuild_tensor_v2",
                  [lambda p: _call(p, "torch.storage", "_load_from_bytes", [lambda q: q.get(raw)]),
                   lambda p: p.raw(b"K\x00"), lambda p: p.int_(PAYLOAD // 4).raw(b"\x85"),
                   lambda p: p.raw(b"K\x01\x85"), lambda p: p.raw(b"\x89"), lambda p: p.get(odict)])

        return jittor_file(_state_dict_pickle(ops, value, refs))

    return build


def misaligned_storage_v3(refs: int) -> Callable[[], bytes]:
    """A torch zip whose one 4 MiB untyped storage is misaligned, viewed as float32 N times."""

    def build() -> bytes:
        ops = Ops()
        storage = ops.raw(b"(").text("storage").glob("torch", "UntypedStorage").text("0").text("cpu") \
            .int_(PAYLOAD).raw(b"tQ").put()
        ops.pop()
        odict = ops.glob("collections", "OrderedDict").raw(b")R").put()
        ops.pop()
        f32 = ops.glob("torch", "float32").put()
        ops.pop()

        def value(o: Ops, index: int) -> None:
            _call(o, "torch._utils", "_rebuild_tensor_v3",
                  [lambda p: p.get(storage), lambda p: p.raw(b"K\x00"), lambda p: p.int_(PAYLOAD // 4).raw(b"\x85"),
                   lambda p: p.raw(b"K\x01\x85"), lambda p: p.raw(b"\x89"), lambda p: p.get(odict),
                   lambda p: p.get(f32)])

        return _torch_zip(_state_dict_pickle(ops, value, refs), {"0": b"\x00" * PAYLOAD}, misalign=1)

    return build


CASES: Dict[str, Callable[[], bytes]] = {
    "dag_dict_key": dag_dict_key,
    "dag_frozenset": dag_frozenset,
    "dag_ordered_dict_arg": dag_ordered_dict_arg,
    "dag_allowed_function_arg": dag_allowed_function_arg,
    "dag_numpy_subtype": dag_numpy_subtype,
    "dag_global_name": dag_global_name,
    "dag_jittor_var_arg": dag_jittor_var_arg,
    "dag_in_config": dag_in_config,
    "dag_storage_type": dag_storage_type,
    "long_key": long_key,
    "dag_list_values": dag_list_values,
    "deep_nesting": deep_nesting,
    "many_objects": many_objects,
    "zip_bomb_byteorder": zip_bomb_byteorder,
    "shared_numpy_bytes_200": shared_numpy_bytes(200),
    "shared_numpy_bytes_2000": shared_numpy_bytes(2000),
    "shared_numpy_bytes_reshaped_2000": shared_numpy_bytes_reshaped(2000),
    "shared_jittor_var_2000": shared_jittor_var(2000),
    "shared_frombuffer_2000": shared_frombuffer(2000),
    "shared_nested_blob_2000": shared_nested_blob(2000),
    "misaligned_storage_v3_200": misaligned_storage_v3(200),
    "misaligned_storage_v3_2000": misaligned_storage_v3(2000),
}


def write_cases(folder: Path, names: Optional[Iterable[str]] = None) -> Dict[str, Path]:
    """Write the chosen cases (all by default) into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or CASES:
        path = folder / f"{name}.pth"
        path.write_bytes(CASES[name]())
        paths[name] = path
    return paths


# --------------------------------------------------------------------------- the measuring driver


def measure(paths: Dict[str, Path], out: Path, *, as_limit_gib: float = 2.0, cpu_limit_s: int = 30,
            wall_limit_s: float = 60.0) -> Dict[str, dict]:
    """Run segnext-convert's entry point on each file in a child process of its own; per child its exit
    code, stderr, CPU and wall seconds and peak RSS (``ru_maxrss`` of that child as ``wait4`` reports
    it: what ``getrusage(RUSAGE_CHILDREN)`` gives for one child).

    One interpreter imports torch and the CLI once, then forks a child per case, so a case costs what
    reading the file costs, not a torch import. The child inherits the parent's resident pages, so its
    peak includes that baseline (reported as ``baseline_mib``). Address space is capped at the
    parent's plus ``as_limit_gib`` and CPU time at ``cpu_limit_s``, so a regression fails fast instead
    of swapping a shared machine.
    """
    import segnext_hub.conversion.converter  # noqa: F401 - torch and the converter load once, in the parent
    from segnext_hub.cli.convert import main as convert_main

    results: Dict[str, dict] = {}
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    vm_now = _vm_size()
    for name, src in paths.items():
        dst = out / f"{name}.safetensors"
        err_file = out / f"{name}.stderr"
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: run the command, never return into the parent's code
            code = 70
            try:
                limit = vm_now + int(as_limit_gib * (1 << 30))
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit_s, cpu_limit_s + 1))
                fd = os.open(err_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 2)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                sys.stderr = os.fdopen(2, "w", buffering=1)
                sys.stdout = os.fdopen(1, "w", buffering=1)
                try:
                    convert_main([str(src), str(dst)], prog_name="segnext-convert", standalone_mode=True)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                sys.stderr.flush()
            finally:
                os._exit(code)
        status, usage = _wait(pid, wall_limit_s)
        wall = time.perf_counter() - started
        results[name] = {
            "exit": os.waitstatus_to_exitcode(status),
            "stderr": err_file.read_text(errors="replace"),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": wall,
            "peak_mib": usage.ru_maxrss / 1024,
            "baseline_mib": baseline_kib / 1024,
            "file_bytes": src.stat().st_size,
            "left": sorted(p.name for p in out.iterdir() if p != err_file),
        }
        err_file.unlink()
    return results


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _wait(pid: int, wall_limit_s: float):
    deadline = time.monotonic() + wall_limit_s
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got:
            return status, usage
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            return status, usage
        time.sleep(0.005)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--as-limit-gib", type=float, default=2.0)
    parser.add_argument("--cpu-limit-s", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_cases(Path(tmp) / "in", args.cases or None)
        out = Path(tmp) / "out"
        out.mkdir()
        results = measure(paths, out, as_limit_gib=args.as_limit_gib, cpu_limit_s=args.cpu_limit_s,
                          wall_limit_s=args.cpu_limit_s * 3)
        left = sorted(p.name for p in out.iterdir())
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{'case':<28} {'file':>9} {'exit':>4} {'cpu s':>6} {'wall s':>6} {'peak MiB':>9}  stderr")
    for name, r in results.items():
        lines = r["stderr"].strip().splitlines()
        first = (lines[0][:90] + f" (+{len(lines) - 1} lines)" * (len(lines) > 1)) if lines else ""
        print(f"{name:<28} {r['file_bytes']:>9} {r['exit']:>4} {r['cpu_s']:>6.2f} {r['wall_s']:>6.2f} "
              f"{r['peak_mib']:>9.0f}  {first}")
    print(f"baseline RSS of the forking parent: {results[next(iter(results))]['baseline_mib']:.0f} MiB; "
          f"files left in the output folder: {left}")


if __name__ == "__main__":
    main()
