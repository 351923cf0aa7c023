"""Atomic writers for converted weights: .safetensors (hashed while written) and .pth.

The safetensors writer stays hand-written (a JSON header and the raw bytes) rather than
``safetensors.torch.save_file`` + a sha256 pass, measured by ``benchmarks/bench_safetensors.py``
on an L state dict (187 MiB, 2 shared CPUs, medians of 5, four runs): the library path
took 1.08x-1.55x our time in every run (0.60 s vs 0.39 s on the quietest), because the hash
needs a second pass over the file; ``safetensors.torch.save`` + hashing the bytes took
1.6x-2.7x and one more file size of RAM. save_file would also refuse tensors sharing memory, which
this writer stores once per name. Files load with ``safetensors.torch.load_file`` and keep
their metadata (tested).
"""

from __future__ import annotations

import collections
import hashlib
import json
import sys
from typing import IO, Any, Dict, Iterable, Optional

import torch

from ..errors import BadInputError
from ..fileio import THREADED_HASH_MIN, StreamingSha256, atomic_writer
from .containers import _SAFETENSORS_NAMES
from .reading import PathLike


def write_safetensors(
    path: PathLike, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str], *, force: bool = False
) -> str:
    """Write ``tensors`` as safetensors atomically and return the file's sha256.

    The writer is our own (the format is a JSON header plus raw bytes) so the bytes can be
    hashed as they stream to disk from the tensors' memory: no serialized copy in RAM and no
    second read of the file. Non-contiguous tensors are packed, shared storage is simply
    written once per name, and tensors are laid out largest-dtype first so each is aligned.
    Files load with ``safetensors.torch.load_file``.
    """
    entries = _safetensors_entries(tensors)
    header = _safetensors_header(entries, _check_metadata(metadata))
    total = sum(tensor.numel() * tensor.element_size() for _, _, tensor in entries)
    digest = StreamingSha256(background=total >= THREADED_HASH_MIN)
    try:
        with atomic_writer(path, force=force, expected_size=len(header) + total) as handle:
            for chunk in _safetensors_chunks(header, entries):
                digest.update(chunk)  # views of the tensors, alive in ``entries`` until the end
                handle.write(chunk)
        return digest.hexdigest()
    finally:
        digest.close()


def write_pth(path: PathLike, obj: Any, *, force: bool = False) -> str:
    """``torch.save`` ``obj`` atomically and return the file's sha256.

    ``obj`` is checked first: only containers, plain values and tensors pass, because those are
    what ``torch.load(weights_only=True)`` accepts; a Placeholder would make the output
    unloadable for every careful reader. Tensors are detached and moved to the CPU.
    """
    plain = _weights_only_copy(obj, "obj")
    with atomic_writer(path, force=force) as handle:
        hashing = _HashingWriter(handle)
        torch.save(plain, hashing)
    return hashing.hexdigest()


class _HashingWriter:
    """A write-only file that hashes what passes through (torch.save only calls write/flush)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _check_metadata(metadata: Any) -> Dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(type(k) is str and type(v) is str for k, v in metadata.items()):
        raise BadInputError("safetensors metadata must map text to text")
    return metadata


def _safetensors_entries(tensors: Any) -> list:
    """(name, safetensors dtype, contiguous CPU tensor), largest element size first for alignment."""
    if not isinstance(tensors, dict):
        raise BadInputError("write_safetensors needs a dict of name -> tensor")
    entries = []
    for name, tensor in tensors.items():
        if type(name) is not str or name == "__metadata__":
            raise BadInputError(f"cannot write tensor name {name!r} to safetensors")
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise BadInputError(
                f"cannot write {name!r} to safetensors: it is a {type(tensor).__name__}, not a dense tensor"
            )
        dtype_name = _SAFETENSORS_NAMES.get(tensor.dtype)
        if dtype_name is None:
            raise BadInputError(f"cannot write {name!r} to safetensors: dtype {tensor.dtype} is not supported")
        packed = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
        entries.append((name, dtype_name, packed))
    entries.sort(key=lambda entry: (-entry[2].element_size(), entry[0]))
    return entries


def _safetensors_header(entries: list, metadata: Dict[str, str]) -> bytes:
    header: Dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype_name, tensor in entries:
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": dtype_name, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data section starts 8-aligned, as the reference writer does
    return len(text).to_bytes(8, "little") + text


def _safetensors_chunks(header: bytes, entries: list) -> Iterable[Any]:
    yield header
    for _, _, tensor in entries:
        if tensor.numel():
            raw = tensor.reshape(-1).view(torch.uint8)
            if sys.byteorder != "little" and tensor.element_size() > 1:
                unit = tensor.element_size() // 2 if tensor.is_complex() else tensor.element_size()
                raw = raw.view(-1, unit).flip(1).reshape(-1)
            yield memoryview(raw.numpy())


# Exact types: a float subclass such as numpy.float64 would be pickled as numpy and refused.
_PTH_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Size, torch.dtype, torch.device)


def _weights_only_copy(obj: Any, where: str, memo: Optional[Dict[int, Any]] = None) -> Any:
    """A copy of ``obj`` holding only what ``torch.load(weights_only=True)`` can rebuild.

    Shared sub-objects stay shared (``memo``), so a DAG is copied once, not once per path.
    """
    memo = {} if memo is None else memo
    if type(obj) in _PTH_PLAIN:
        return obj
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter) or obj.layout != torch.strided:
            raise BadInputError(f"cannot write {where} to .pth: {type(obj).__name__} is not a plain dense tensor")
        out: Any = obj.detach().cpu()
    elif type(obj) in (dict, collections.OrderedDict):
        out = type(obj)()
        for key, value in obj.items():
            key_copy = _weights_only_copy(key, f"{where} key", memo)
            out[key_copy] = _weights_only_copy(value, f"{where}[{key!r}]", memo)
    elif type(obj) in (list, tuple, set):
        out = type(obj)(_weights_only_copy(item, f"{where}[{i}]", memo) for i, item in enumerate(obj))
    else:
        raise BadInputError(
            f"cannot write {where} to .pth: a {type(obj).__module__}.{type(obj).__qualname__} would not load "
            "with torch.load(weights_only=True)"
        )
    memo[id(obj)] = (obj, out)
    return out
