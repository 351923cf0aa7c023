"""Container decoders: torch zip and legacy, safetensors, Jittor and Paddle pickles, PaddleSeg
backbone zips (:mod:`.paddle`), and the final pass that turns decoded values into tensors. Each decoder takes the whole file as a memoryview."""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickletools
import struct
import sys
import zipfile
import zlib
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch

from ..errors import BadInputError, one_line
from .builders import _SCALARS, _ints, _NumpyArray, allow_nested_loader
from .pickled import (
    MAX_DEPTH,
    MAX_OBJECTS,
    CorruptData,
    MemoryReader,
    Placeholder,
    _Marker,
    _Safe,
    _Storage,
    current_limits,
    safe_repr,
)
from .paddle import is_paddle_zip, zip_model_member
from .unpickler import SafeUnpickler

#: ``paddle-pdparams`` is a pickle that :func:`.paddle.drop_name_table` recognised after decoding.
FORMATS = ("torch-zip", "torch-legacy", "safetensors", "jittor-pkl", "paddle-pdparams", "paddle-zip")

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# What torch's legacy writer emits first: pickle protocol 2 of the magic number (LONG1, 10 bytes).
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")
_JITTOR_MAGIC = b"HCAJSLHD"
_JITTOR_TRAILER = 20 + len(_JITTOR_MAGIC)
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def sniff_format(buf: memoryview, where: str) -> str:
    """Name the container from its first bytes; refuse anything that is not one."""
    head = bytes(buf[:16])
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "paddle-zip" if is_paddle_zip(buf) else "torch-zip"
    if _starts_with_legacy_magic(buf):
        return "torch-legacy"
    header_len = int.from_bytes(head[:8], "little")
    if len(buf) >= 9 and buf[8:9] == b"{" and header_len <= _SAFETENSORS_MAX_HEADER:
        if 8 + header_len > len(buf):
            raise BadInputError(f"cannot read {where}: truncated safetensors file (the header ends past the file)")
        return "safetensors"
    if len(buf) >= 2 and buf[0] == 0x80 and 2 <= buf[1] <= 5:
        return "jittor-pkl"
    if len(buf) >= 262 and buf[257:262] == b"ustar":
        raise BadInputError(f"cannot read {where}: a tar-format torch checkpoint (torch < 1.0) is not supported")
    raise BadInputError(
        f"{where} is not a checkpoint: unrecognised content starting with {head[:8].hex()} "
        "(expected a torch .pth, .safetensors, Jittor .pkl or Paddle .pdparams)"
    )


def _starts_with_legacy_magic(buf: memoryview) -> bool:
    """True when the first pickle is torch's legacy magic number, whatever protocol wrote it.

    Only the first few opcodes are parsed (pickletools decodes, it never builds objects), so a
    Jittor pickle is not unpickled twice just to be told apart.
    """
    if bytes(buf[: len(_LEGACY_PREFIX)]) == _LEGACY_PREFIX:
        return True
    if len(buf) < 2 or buf[0] != 0x80:
        return False
    try:
        for index, (opcode, arg, _) in enumerate(pickletools.genops(io.BytesIO(bytes(buf[:64])))):
            if opcode.name in ("LONG1", "LONG4", "LONG"):
                return arg == _LEGACY_MAGIC
            if opcode.name not in ("PROTO", "FRAME") or index > 2:
                return False
    except Exception:  # noqa: BLE001 - not a pickle we recognise; the caller decides what it is
        return False
    return False


def _buffer_tensor(buf: memoryview, offset: int, nbytes: int, dtype: torch.dtype, little_endian: bool = True
                   ) -> torch.Tensor:
    """A flat tensor over ``buf[offset:offset+nbytes]``: a view when aligned, else a copy."""
    if nbytes == 0:
        return torch.empty(0, dtype=dtype)
    if offset < 0 or offset + nbytes > len(buf):
        raise CorruptData("tensor data lies outside the file")
    if nbytes % dtype.itemsize:
        raise CorruptData(f"{nbytes} bytes is not a whole number of {dtype} elements")
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
    swap = little_endian != (sys.byteorder == "little") and dtype.itemsize > 1
    if dtype == torch.bool or swap or raw.data_ptr() % dtype.itemsize:
        current_limits().spend(nbytes, "a copy of tensor data")
    if dtype == torch.bool:
        return raw != 0  # any nonzero byte is True; never hand torch a bool outside {0, 1}
    if swap:
        unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
        raw = raw.view(-1, unit).flip(1).reshape(-1)
    elif raw.data_ptr() % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype)


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if not isinstance(storage_type, _Marker) or not isinstance(storage_type.payload, torch.dtype):
        raise CorruptData(f"unknown storage type {safe_repr(storage_type)}")
    return storage_type.payload


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if type(value) is not str:
        raise CorruptData(f"{what} is not text")
    return value


def _decode_torch_zip(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    reader = MemoryReader(buf)
    try:
        archive = zipfile.ZipFile(reader)
    except zipfile.BadZipFile as exc:
        raise CorruptData(f"truncated or corrupt zip archive ({one_line(exc)})") from None
    with archive:
        infos = archive.infolist()
        _check_members(infos, len(buf))
        pickles = [info.filename for info in infos if info.filename.endswith("/data.pkl")]
        if not pickles or pickles[0].count("/") != 1:
            raise CorruptData("zip archive is not a torch checkpoint (no <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        names = {info.filename: info for info in infos}
        if f"{prefix}constants.pkl" in names or any(name.startswith(f"{prefix}code/") for name in names):
            raise CorruptData("this is a TorchScript archive (torch.jit.save), not a checkpoint")
        little = _zip_byteorder(buf, names, prefix)
        loaded: Dict[str, _Storage] = {}

        def storage(pid: Any) -> _Storage:
            if not isinstance(pid, tuple) or len(pid) != 5 or _text(pid[0], "persistent id") != "storage":
                raise CorruptData("unexpected persistent id in a torch zip checkpoint")
            _, storage_type, key, _location, numel = pid
            key = _text(key, "storage key")
            dtype = _storage_dtype(storage_type)
            if key in loaded and loaded[key].data.dtype != dtype:
                raise CorruptData(f"storage data/{key} is used with two different dtypes")
            if key not in loaded:
                info = names.get(f"{prefix}data/{key}")
                if info is None:
                    raise CorruptData(f"storage record data/{key} is missing from the archive")
                if type(numel) is not int or numel * dtype.itemsize != info.file_size:
                    raise CorruptData(f"storage record data/{key} has {info.file_size} bytes, not {numel} x {dtype}")
                offset = _zip_data_offset(buf, info)
                loaded[key] = _Storage(_buffer_tensor(buf, offset, info.file_size, dtype, little))
            return loaded[key]

        data_info = names[pickles[0]]
        data = _zip_member(buf, data_info)
        obj = SafeUnpickler(io.BufferedReader(MemoryReader(data)), storage).load()
    return obj, {}


_SMALL_MEMBER = 64  # byteorder ("little"/"big") and version hold a few bytes


def _check_members(infos: list, file_size: int) -> None:
    """Every member as its central directory entry declares it, before a byte of any is read.

    torch writes every member stored (uncompressed), so a compressed or encrypted member is not
    torch's: refused here, where a 2 MB file declaring a 2 GiB member costs nothing. A stored
    member's size equals its compressed size and lies within the file.
    """
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise CorruptData(f"zip member {safe_repr(info.filename)} is compressed or encrypted; torch writes "
                              "every member uncompressed")
        if info.file_size != info.compress_size or info.header_offset + info.file_size > file_size:
            raise CorruptData(f"zip member {safe_repr(info.filename)} declares {info.file_size} bytes, more than "
                              "the file holds (truncated or corrupt archive)")


def _zip_member(buf: memoryview, info: zipfile.ZipInfo) -> memoryview:
    """A stored member's bytes, in place (no copy), after its header and CRC checks."""
    offset = _zip_data_offset(buf, info)
    return buf[offset : offset + info.file_size]


def _zip_byteorder(buf: memoryview, names: Dict[str, zipfile.ZipInfo], prefix: str) -> bool:
    info = names.get(f"{prefix}byteorder")
    if info is None:
        return True
    if info.file_size > _SMALL_MEMBER:
        raise CorruptData(f"the byteorder member holds {info.file_size} bytes, not a byte order")
    order = bytes(_zip_member(buf, info))
    if order not in (b"little", b"big"):
        raise CorruptData(f"unknown byte order {order[:16]!r}")
    return order == b"little"


def _zip_data_offset(buf: memoryview, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start in the file, after checking its header and CRC.

    Reading through zipfile would copy every record; torch stores them uncompressed and
    aligned, so the bytes can be used in place. The CRC check (cheap next to the sha256)
    turns a flipped bit in a download into a clear error instead of silently wrong weights.
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise CorruptData(f"zip member {safe_repr(info.filename)} is compressed or encrypted; torch never writes that")
    start = info.header_offset
    header = bytes(buf[start : start + 30])
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise CorruptData(f"zip local header of {safe_repr(info.filename)} is damaged")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    offset = start + 30 + name_len + extra_len
    if offset + info.file_size > len(buf):
        raise CorruptData(f"zip member {safe_repr(info.filename)} ends past the end of the file (truncated?)")
    if zlib.crc32(memoryview(buf)[offset : offset + info.file_size]) != info.CRC:
        raise CorruptData(f"zip member {safe_repr(info.filename)} fails its CRC check (corrupt file)")
    return offset


class _LegacyStorages:
    """Storages of the legacy format: allocated while unpickling, filled from the tail after."""

    def __init__(self, budget: int) -> None:
        self.budget = budget  # no storage may claim more bytes than the file holds
        self.roots: Dict[str, _Storage] = {}
        self.views: Dict[str, _Storage] = {}

    def load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) != 6 or _text(pid[0], "persistent id") != "storage":
            raise CorruptData("unexpected persistent id in a legacy checkpoint")
        _, storage_type, key, _location, numel, view = pid
        key, dtype = _text(key, "storage key"), _storage_dtype(storage_type)
        if key not in self.roots:
            if type(numel) is not int or numel < 0 or numel * dtype.itemsize > self.budget:
                raise CorruptData(f"storage {key} claims {numel} elements, more than the file holds")
            self.budget -= numel * dtype.itemsize
            current_limits().spend(numel * dtype.itemsize, "a legacy storage")
            self.roots[key] = _Storage(torch.empty(numel, dtype=dtype))
        root = self.roots[key]
        if view is None:
            return root
        return self._view(root, view)

    def _view(self, root: _Storage, view: Any) -> _Storage:
        if not isinstance(view, tuple) or len(view) != 3:
            raise CorruptData("invalid storage view in a legacy checkpoint")
        view_key, offset, size = _text(view[0], "view key"), view[1], view[2]
        if type(offset) is not int or type(size) is not int or offset < 0 or size < 0 \
                or offset + size > root.data.numel():
            raise CorruptData("storage view outside its storage")
        if view_key not in self.views:
            self.views[view_key] = _Storage(root.data[offset : offset + size])
        return self.views[view_key]

    def fill(self, buf: memoryview, pos: int, keys: Any, little: bool) -> None:
        if not isinstance(keys, list) or not all(type(key) is str for key in keys) or len(set(keys)) != len(keys):
            raise CorruptData("legacy storage key list is invalid")
        if set(keys) != set(self.roots):
            raise CorruptData("legacy storage key list does not match the storages the pickle uses")
        for key in keys:
            target = self.roots[key].data
            if pos + 8 > len(buf):
                raise CorruptData("storage data ends early (truncated file)")
            numel = int.from_bytes(buf[pos : pos + 8], "little" if little else "big")
            pos += 8
            if numel != target.numel():
                raise CorruptData(f"storage {key} holds {numel} elements, the pickle expects {target.numel()}")
            nbytes = numel * target.element_size()
            if pos + nbytes > len(buf):
                raise CorruptData("storage data ends early (truncated file)")
            target.copy_(_buffer_tensor(buf, pos, nbytes, target.dtype, little))
            pos += nbytes


def _decode_torch_legacy(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    stream = io.BufferedReader(MemoryReader(buf))
    if SafeUnpickler(stream).load() != _LEGACY_MAGIC:
        raise CorruptData("bad magic number in a legacy torch checkpoint")
    protocol = SafeUnpickler(stream).load()
    if protocol != _LEGACY_PROTOCOL:
        raise CorruptData(f"unsupported legacy torch protocol {safe_repr(protocol)}")
    sys_info = SafeUnpickler(stream).load()
    if not isinstance(sys_info, dict):
        raise CorruptData("legacy torch checkpoint without system info")
    little = sys_info.get("little_endian", True) is not False
    storages = _LegacyStorages(len(buf))
    obj = SafeUnpickler(stream, storages.load).load()
    keys = SafeUnpickler(stream).load()
    storages.fill(buf, stream.tell(), keys, little)
    return obj, {}


def _decode_pickle(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    """A plain pickle, as Jittor's ``jt.save`` writes it (the SHA-1 trailer is optional)."""
    view = memoryview(buf)
    if len(buf) > _JITTOR_TRAILER and view[-len(_JITTOR_MAGIC):] == _JITTOR_MAGIC:
        body = view[:-_JITTOR_TRAILER]
        if hashlib.sha1(body).digest() != view[-_JITTOR_TRAILER : -len(_JITTOR_MAGIC)]:
            raise CorruptData("corrupt Jittor checkpoint: the SHA-1 in its trailer does not match the pickle")
        view = body
    stream = io.BufferedReader(MemoryReader(view))
    return SafeUnpickler(stream).load(), {}


def _decode_paddle_zip(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    """A PaddleSeg backbone zip: the pickle of its one ``<folder>/model.pdparams``."""
    return _decode_pickle(zip_model_member(buf))


_SAFETENSORS_DTYPES = {
    name: getattr(torch, attr)
    for name, attr in (
        ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"), ("I64", "int64"),
        ("I32", "int32"), ("I16", "int16"), ("I8", "int8"), ("U8", "uint8"), ("BOOL", "bool"),
        ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"), ("C64", "complex64"),
        ("F8_E4M3", "float8_e4m3fn"), ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2", "float8_e5m2"),
        ("F8_E5M2FNUZ", "float8_e5m2fnuz"), ("F8_E8M0", "float8_e8m0fnu"),
    )
    if isinstance(getattr(torch, attr, None), torch.dtype)
}
_SAFETENSORS_NAMES = {dtype: name for name, dtype in _SAFETENSORS_DTYPES.items()}


def _decode_safetensors(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    """Parse the header ourselves so tensors can view the buffer already read and hashed.

    Kept rather than the safetensors package, measured by ``benchmarks/bench_safetensors.py``
    (L state dict, 187 MiB, medians of 5, on 2 shared CPUs, so times vary by run):
    ``safetensors.torch.load(bytes(buf))`` always needs one more file size of peak RSS
    (3.03x vs 2.03x the file; it takes ``bytes``, a copy) and took 0.64x-2.76x our time;
    ``sha256 pass + load_file`` took 0.81x-1.01x with every tensor used, the same peak RSS,
    but it maps the file a second time, so the tensors would not be the bytes whose hash is
    reported (a file renamed over in between goes unnoticed), and decoders here take any
    buffer. No speed gain that would pay for that. The checks below are the format's own rules (contiguous, in-bounds, sizes
    matching shapes and dtypes, text-only metadata), each a one-line BadInputError.
    """
    header_len = int.from_bytes(buf[:8], "little")
    try:
        header = json.loads(bytes(buf[8 : 8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptData(f"safetensors header is not valid JSON ({one_line(exc)})") from None
    if not isinstance(header, dict):
        raise CorruptData("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptData("safetensors metadata must map text to text")
    entries = sorted((_safetensors_entry(name, info) for name, info in header.items()), key=lambda e: e[3])
    data_start, expected = 8 + header_len, 0
    for name, _, _, (begin, end) in entries:
        if begin != expected:
            raise CorruptData(f"safetensors data of {name!r} does not follow the previous tensor")
        expected = end
    if data_start + expected != len(buf):
        raise CorruptData("safetensors data section size does not match its header (truncated file?)")
    tensors = {
        name: _buffer_tensor(buf, data_start + begin, end - begin, dtype).reshape(shape)
        for name, dtype, shape, (begin, end) in entries
    }
    return tensors, dict(metadata)


def _safetensors_entry(name: str, info: Any) -> Tuple[str, torch.dtype, Tuple[int, ...], Tuple[int, int]]:
    if not isinstance(info, dict):
        raise CorruptData(f"safetensors entry {name!r} is not an object")
    dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise CorruptData(f"safetensors entry {name!r} has unsupported dtype {info.get('dtype')!r}")
    shape, offsets = _ints(info.get("shape"), "shape"), _ints(info.get("data_offsets"), "offsets")
    if min(shape, default=0) < 0 or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
        raise CorruptData(f"safetensors entry {name!r} has an invalid shape or offsets")
    if math.prod(shape) * dtype.itemsize != offsets[1] - offsets[0]:
        raise CorruptData(f"safetensors entry {name!r}: {offsets[1] - offsets[0]} bytes for shape {list(shape)}")
    return name, dtype, shape, (offsets[0], offsets[1])


DECODERS: Dict[str, Callable[[memoryview], Tuple[Any, Dict[str, str]]]] = {
    "torch-zip": _decode_torch_zip,
    "torch-legacy": _decode_torch_legacy,
    "safetensors": _decode_safetensors,
    "jittor-pkl": _decode_pickle,
    "paddle-zip": _decode_paddle_zip,
}


def finalize(obj: Any) -> Any:
    """Replace numpy builders and bare storages by tensors, in place where containers allow.

    Every object is visited once (memoised by identity: a shared-reference DAG costs its size, not
    its number of paths), the walk stops past ``MAX_DEPTH`` levels or ``MAX_OBJECTS`` objects, and
    arrays made from one shared payload become one shared tensor.
    """
    return _Finalizer().value(obj, 0)


class _Finalizer:
    def __init__(self) -> None:
        self.memo: Dict[int, Tuple[Any, Any]] = {}  # id -> (object, its final value)
        self.arrays: Dict[tuple, Any] = {}  # _NumpyArray.share_key() -> tensor
        self.count = 0

    def value(self, obj: Any, depth: int) -> Any:
        if type(obj) in _SCALARS or isinstance(obj, (torch.Tensor, torch.dtype, type, _Safe)):
            return obj
        seen = self.memo.get(id(obj))
        if seen is not None:
            return seen[1]
        self.count += 1
        if depth > MAX_DEPTH:
            raise CorruptData(f"the pickled data nests more than {MAX_DEPTH} levels deep; no checkpoint does")
        if self.count > MAX_OBJECTS:
            raise CorruptData(f"the pickled data holds more than {MAX_OBJECTS} objects; no checkpoint does")
        inner = depth + 1
        if isinstance(obj, _NumpyArray):
            key = obj.share_key()
            if key not in self.arrays:
                self.arrays[key] = self.value(obj.finish(), inner)
            result = self.arrays[key]
        elif isinstance(obj, _Storage):
            result = obj.data
        elif isinstance(obj, dict):
            self.memo[id(obj)] = (obj, obj)
            for key, item in obj.items():
                obj[key] = self.value(item, inner)
            result = obj
        elif isinstance(obj, list):
            self.memo[id(obj)] = (obj, obj)
            obj[:] = [self.value(item, inner) for item in obj]
            result = obj
        elif isinstance(obj, (tuple, set, frozenset)):
            items = [self.value(item, inner) for item in obj]
            unchanged = all(a is b for a, b in zip(items, obj))
            result = obj if unchanged else (tuple(items) if isinstance(obj, tuple) else type(obj)(items))
        elif isinstance(obj, Placeholder):
            self.memo[id(obj)] = (obj, obj)
            obj.args = self.value(obj.args, inner)
            obj.state = self.value(obj.state, inner)
            for container in (obj.kwargs, obj.listitems, obj.dictitems):
                self.value(container, inner)
            result = obj
        else:
            result = obj
        self.memo[id(obj)] = (obj, result)
        return result


def _load_from_bytes(data: Any) -> Any:
    """``pickle.dumps(tensor)`` stores a nested ``torch.save`` blob; decode it with our own reader.

    One blob object referred to many times is decoded once (its storage shared), and a blob may not
    hold another: ``pickle.dumps`` never nests them, and each level would copy the bytes again.
    """
    if type(data) is not bytes:
        raise CorruptData("torch.storage._load_from_bytes needs bytes")
    limits = current_limits()
    return limits.once(("nested torch.save", id(data)), data, lambda: _decode_nested(data, limits))


def _decode_nested(data: bytes, limits: Any) -> Any:
    if limits.nested:
        raise CorruptData("nested torch data inside nested torch data; torch never writes that")
    limits.spend(len(data), "a nested torch.save blob")
    buf = memoryview(np.frombuffer(data, dtype=np.uint8).copy())
    limits.nested += 1
    try:
        if bytes(buf[:4]).startswith(b"PK\x03\x04"):
            return _decode_torch_zip(buf)[0]
        if _starts_with_legacy_magic(buf):
            return _decode_torch_legacy(buf)[0]
    finally:
        limits.nested -= 1
    raise CorruptData("embedded torch data is neither a zip nor a legacy checkpoint")


allow_nested_loader(_load_from_bytes)
