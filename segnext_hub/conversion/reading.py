"""Safe reading of checkpoints (.pth zip and legacy, .safetensors, Jittor .pkl); atomic writing.

Why not ``torch.load``? With ``weights_only=True`` it refuses what real SegNeXt checkpoints
hold (numpy values, mmengine ``HistoryBuffer``, ``argparse.Namespace``); with
``weights_only=False`` it runs whatever the pickle names. Passing a restricted
``pickle_module`` works today but leans on private plumbing, and the environment variable
``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` silently swaps the unpickler underneath it. So this module
parses the containers itself. The formats are small and documented by torch's own writer:

- torch zip: ``<prefix>/data.pkl`` plus one stored record ``<prefix>/data/<key>`` per storage;
  the pickle names a storage by persistent id ``('storage', type, key, location, numel)``.
- torch legacy: four pickles back to back (magic, protocol, sys info, the object), a pickle of
  storage keys, then per key an int64 element count and the raw bytes.
- safetensors: an 8-byte header length, a JSON header, raw little-endian bytes.
- Jittor ``.pkl``: a protocol-4 pickle (Vars saved as numpy arrays), optionally followed by the
  20-byte SHA-1 of the pickle and the magic ``HCAJSLHD``.

The file is read once: hashed while it is read into one writable buffer, and tensors of the zip
and safetensors formats are views into that buffer (no second copy; peak memory about the file
size). Call ``.clone()`` on a tensor to detach it from the buffer.

Pickles go through :class:`_SafeUnpickler`, which never imports anything a pickle names. Its
``find_class`` answers from a fixed allowlist of data builders (tensor rebuild functions,
OrderedDict, numpy array/scalar reconstruction reimplemented here as pure data decoding) and
refuses module families that exist to run code (``os``, ``subprocess``, ``builtins``, ``torch``
and ``numpy`` beyond the allowlist...) with :class:`UnsafePickleError`. Any other name becomes
an inert placeholder *class* created on the spot: instantiating it, ``__setstate__`` and
``getattr`` on it only build :class:`Placeholder` records, so foreign objects (mmengine
``HistoryBuffer``, ``argparse.Namespace``) are readable without their package installed and
nothing of theirs can ever run. BUILD may only target those records.

What comes back: dicts (OrderedDict kept), lists, tuples, plain values, tensors (parameters as
plain tensors, bools normalised to 0/1), numpy arrays as tensors (text/object arrays as lists),
numpy scalars as Python numbers, and Placeholders.
"""

from __future__ import annotations

import _compat_pickle
import collections
import concurrent.futures
import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import pickletools
import re
import stat
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import BadInputError, SegnextHubError, UnsafePickleError, one_line
from ..fileio import atomic_writer

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("torch-zip", "torch-legacy", "safetensors", "jittor-pkl")

_READ_CHUNK = 8 << 20
_EXPAND_LIMIT, _EXPAND_FLOOR = 64, 1 << 24  # a view may have at most this many elements more than its storage
_THREADED_HASH_MIN = 32 << 20
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# What torch's legacy writer emits first: pickle protocol 2 of the magic number (LONG1, 10 bytes).
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")
_JITTOR_MAGIC = b"HCAJSLHD"
_JITTOR_TRAILER = 20 + len(_JITTOR_MAGIC)
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit


# --------------------------------------------------------------------------- public types


@dataclass(eq=False)
class Placeholder:
    """An inert record of an object the pickle wanted to build from a class we never import.

    ``args``/``kwargs`` are what the class was called with, ``state`` what ``__setstate__``
    received, ``listitems``/``dictitems`` what the pickle appended or set on it. Nothing here
    executes anything; compare by identity (``eq=False``) because fields may hold tensors.
    """

    module: str
    name: str
    args: tuple = ()
    state: Any = None
    kwargs: dict = field(default_factory=dict)
    listitems: list = field(default_factory=list)
    dictitems: dict = field(default_factory=dict)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    # The pickle protocol hooks: each only records data.
    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dictitems[key] = value

    def append(self, value: Any) -> None:
        self.listitems.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.listitems.extend(values)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # copy/deepcopy must not route the fields through our recording ``__setstate__``.
        fields = (self.module, self.name, self.args, self.state, self.kwargs, self.listitems, self.dictitems)
        return _restore_placeholder, (type(self), *fields)


def _restore_placeholder(cls: type, *fields: Any) -> Placeholder:
    obj = object.__new__(cls)
    Placeholder.__init__(obj, *fields)
    return obj


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found; ``obj`` is the unpickled (or safetensors) top level."""

    path: Path
    format: str
    obj: Any
    sha256: str
    metadata: Dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- public functions


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint of any supported format without executing anything it contains.

    The format comes from the content (magic bytes), not the file name. Every failure is a
    :class:`BadInputError` (or its :class:`UnsafePickleError`) with one line naming the file.
    """
    src = Path(path)
    where = _show_path(src)
    buf, digest = _read_whole_file(src, where)
    try:
        fmt = _sniff(buf, where)
        with _decoding_errors(where):
            raw, metadata = _DECODERS[fmt](buf)
            sha256 = digest.hexdigest()
            del buf  # numpy payloads of a pickle are copies: free the file before converting them
            obj = _finalize(raw, {})
    finally:
        digest.close()
    return Checkpoint(path=src, format=fmt, obj=obj, sha256=sha256, metadata=metadata)


@contextlib.contextmanager
def _decoding_errors(where: str) -> Iterator[None]:
    """Turn whatever bad bytes make the decoders raise into one-line BadInputErrors."""
    try:
        yield
    except _Unsafe as exc:
        raise UnsafePickleError(
            f"refusing to load {where}: its pickle asks for {one_line(exc)}, which is not on the allowlist "
            "(nothing was executed)"
        ) from None
    except _Corrupt as exc:
        raise BadInputError(f"cannot read {where}: {one_line(exc)}") from None
    except SegnextHubError:
        raise
    except (EOFError, pickle.UnpicklingError) as exc:
        raise BadInputError(f"cannot read {where}: {_pickle_reason(exc)}") from exc
    except MemoryError:
        raise BadInputError(f"cannot read {where}: out of memory while decoding (corrupt size field?)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on bad bytes is bad input
        raise BadInputError(f"cannot read {where}: {one_line(exc)}") from exc


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
    digest = _Sha256(background=total >= _THREADED_HASH_MIN)
    try:
        with atomic_writer(path, force=force) as handle:
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


# --------------------------------------------------------------------------- messages


class _Unsafe(Exception):
    """Raised inside the unpickler; its text is the ``module.name`` that was refused."""


class _Corrupt(Exception):
    """Raised by the decoders; its text is the one-line reason the bytes are unusable."""


def _show_path(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def _pickle_reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, EOFError) or "truncated" in text or "ran out of input" in text.lower():
        return "the pickle data ends early (truncated file or incomplete download)"
    return f"corrupt pickle ({one_line(exc)})"


# --------------------------------------------------------------------------- reading the file


class _Sha256:
    """sha256 that can run on a helper thread, so hashing overlaps reading, parsing and writing.

    ``update`` only queues a view of the data (no copy); the caller keeps that memory alive
    and unchanged until ``hexdigest``. One worker keeps the chunks in order, and
    ``sha256.update`` releases the GIL, so this is real parallelism on two cores.
    """

    def __init__(self, background: bool) -> None:
        self._digest = hashlib.sha256()
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if background else None
        self._futures: list = []

    def update(self, chunk: Any) -> None:
        if self._pool is None:
            self._digest.update(chunk)
        else:
            self._futures.append(self._pool.submit(self._digest.update, chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def hexdigest(self) -> str:
        self.close()
        for future in self._futures:
            future.result()
        self._futures.clear()
        return self._digest.hexdigest()


def _read_whole_file(path: Path, where: str) -> Tuple[memoryview, _Sha256]:
    """Read the file once into one writable buffer, queueing each chunk for hashing.

    The buffer is ``numpy.empty`` (``bytearray`` zero-fills: a page-faulting pass over the
    whole size for nothing). The hash finishes on its thread while the caller decodes.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BadInputError(f"{where}: no such file") from None
    except OSError as exc:
        raise BadInputError(f"cannot read {where}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadInputError(f"{where} is a directory, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):
        raise BadInputError(f"{where} is not a regular file")
    size = info.st_size
    digest = _Sha256(background=size >= _THREADED_HASH_MIN)
    try:
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise BadInputError(f"{where} is empty (0 bytes)")
            buf = memoryview(np.empty(size, dtype=np.uint8))
            pos = 0
            while pos < size:
                got = handle.readinto(buf[pos : pos + _READ_CHUNK])
                if not got:
                    raise BadInputError(f"cannot read {where}: the file shrank while it was being read")
                digest.update(buf[pos : pos + got])
                pos += got
    except BaseException as exc:
        digest.close()
        if isinstance(exc, OSError):
            raise BadInputError(f"cannot read {where}: {exc.strerror or exc}") from None
        if isinstance(exc, MemoryError):
            raise BadInputError(f"cannot read {where}: not enough memory for {size} bytes") from None
        raise
    return buf, digest


def _sniff(buf: memoryview, where: str) -> str:
    """Name the container from its first bytes; refuse anything that is not one."""
    head = bytes(buf[:16])
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "torch-zip"
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
        "(expected a torch .pth, .safetensors or Jittor .pkl)"
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


class _MemoryReader(io.RawIOBase):
    """A seekable read-only file over a memoryview, so zipfile and pickle need no copy."""

    def __init__(self, data: memoryview) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: Optional[int] = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        data = bytes(self._view[self._pos : end]) if end > self._pos else b""
        self._pos += len(data)
        return data

    def readinto(self, target: Any) -> int:
        count = max(0, min(len(target), len(self._view) - self._pos))
        target[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._view = memoryview(b"")  # drop the reference; release() could refuse while slices live
        super().close()


# --------------------------------------------------------------------------- the unpickler


class _Safe:
    """An allowlisted callable; immutable so a pickle's BUILD cannot tamper with it."""

    __slots__ = ("_fn", "_label")

    def __init__(self, label: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._label} is read-only")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{self._label} is read-only")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<allowlisted {self._label}>"


class _Marker(_Safe):
    """A name the pickle may mention as a value (a type) but never call; ``payload`` is data."""

    def __init__(self, label: str, payload: Any = None) -> None:
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_fn", payload)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Unsafe(f"a call of {self._label}")

    @property
    def payload(self) -> Any:
        return self._fn


class _Storage:
    """A torch storage as a flat tensor of its dtype; tensors are strided views of it."""

    __slots__ = ("data",)

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data


def _placeholder_class(module: str, name: str) -> type:
    """A fresh stand-in class: calling or rebuilding it only ever makes a Placeholder."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:  # noqa: N807
        obj = object.__new__(cls)
        Placeholder.__init__(obj, module, name, args, None, dict(kwargs))
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: N807 - __new__ did the work
        pass

    label = f"Placeholder[{module}.{name}]"
    namespace = {"__new__": __new__, "__init__": __init__, "__module__": __name__, "__qualname__": label,
                 "module": module, "name": name}
    return type(label, (Placeholder,), namespace)


def _is_placeholder_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Placeholder) and obj is not Placeholder


class _SafeUnpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` never imports: allowlist, refusal or placeholder.

    It extends the pure-Python ``pickle._Unpickler``, not the C one: the C unpickler sizes
    its memo array from the index a PUT opcode names, so five crafted bytes
    (``LONG_BINPUT 0x7fffffff``) make it zero-fill tens of GiB. The Python one keeps the
    memo in a dict, and lets us restrict BUILD. It costs a few tens of milliseconds on a
    2000-tensor ``data.pkl`` (still far less than ``torch.load(weights_only=True)``).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], persistent: Optional[Callable[[Any], Any]] = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._file = file
        self._persistent = persistent
        self._classes: Dict[str, type] = {}
        self._getattr = _Safe("builtins.getattr", self._placeholder_getattr)

    def find_class(self, module: Any, name: Any) -> Any:
        if type(module) is not str or type(name) is not str:
            raise _Unsafe(f"a global with a non-text name ({module!r}, {name!r})")
        module, name = _py3_name(module, name)
        qualname = f"{module}.{name}"
        if qualname == "builtins.getattr":
            return self._getattr
        allowed = _ALLOWED.get(qualname)
        if allowed is not None:
            return allowed
        _refuse_if_dangerous(module, name)
        return self._placeholder(module, name)

    def load(self) -> Any:
        """Unpickle; a pickle that fails with no bytes left is reported as truncated."""
        try:
            return super().load()
        except (EOFError, struct.error, pickle.UnpicklingError):
            if self._file.read(1) == b"":
                raise _Corrupt("the pickle data ends early (truncated file or incomplete download)") from None
            raise

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise _Corrupt("a plain pickle must not contain persistent ids")
        return self._persistent(pid)

    def _load_build(self) -> None:
        """BUILD may only fill our own records; on a real object (a tensor's ``__setstate__``,
        an instance ``__dict__``) it would let the pickle mutate or drive code it did not make."""
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is collections.OrderedDict and isinstance(state, dict):
            # ``model.state_dict()`` pickles its ``_metadata`` (module versions) this way;
            # nearly every real checkpoint has it. It is plain data: keep it as a copy,
            # never via setattr on arbitrary names.
            if set(state) - {"_metadata"}:
                raise _Unsafe("BUILD on an OrderedDict with attributes other than _metadata")
            if "_metadata" in state:
                target._metadata = state["_metadata"]  # type: ignore[attr-defined]
            return
        if not isinstance(target, _BUILDABLE):
            raise _Unsafe(f"BUILD (setting state) on a real {type(target).__name__} object")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = _load_build

    def _placeholder(self, module: str, name: str) -> type:
        key = f"{module}.{name}"
        if key not in self._classes:
            self._classes[key] = _placeholder_class(module, name)
        return self._classes[key]

    def _placeholder_getattr(self, obj: Any, attr: Any, *default: Any) -> Any:
        """``getattr`` on a placeholder names another placeholder; on anything real it is refused."""
        if not (_is_placeholder_class(obj) or isinstance(obj, Placeholder)):
            raise _Unsafe(f"builtins.getattr on a real {type(obj).__name__} object")
        if type(attr) is not str or not _NAME_PART.fullmatch(attr) or _is_dunder(attr):
            raise _Unsafe(f"builtins.getattr({obj.module}.{obj.name}, {attr!r})")
        return self._placeholder(obj.module, f"{obj.name}.{attr}")


def _py3_name(module: str, name: str) -> Tuple[str, str]:
    """Python 2 names as the stock unpickler's ``fix_imports`` maps them (``__builtin__``,
    ``copy_reg``, ``commands.Popen``...), so a py2 spelling cannot dodge the refusal list."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


_NAME_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Families whose members run code, touch the system or load more pickles. Anything from them that
# is not explicitly allowlisted is refused outright rather than turned into a placeholder.
_REFUSED_ROOTS = frozenset(
    """builtins os posix nt posixpath ntpath sys subprocess shutil importlib imp pkgutil zipimport runpy
    code codeop pickle _pickle pickletools copyreg marshal shelve dbm types inspect gc ctypes _ctypes cffi
    socket _socket ssl select selectors asyncio threading _thread multiprocessing concurrent signal pty tty
    platform webbrowser pdb bdb timeit trace cProfile profile functools operator _operator io _io tempfile
    glob fnmatch site sysconfig distutils setuptools pip urllib http ftplib smtplib telnetlib tarfile zipfile
    sqlite3 _codecs codecs encodings commands exceptions weakref _weakref atexit logging torch numpy jittor dill
    cloudpickle joblib yaml pydoc sh pexpect paramiko requests tensorflow keras jax""".split()
)


def _is_dunder(part: str) -> bool:
    return len(part) > 4 and part.startswith("__") and part.endswith("__")


def _refuse_if_dangerous(module: str, name: str) -> None:
    qualname = f"{module}.{name}"
    parts = qualname.split(".")
    if not all(_NAME_PART.fullmatch(part) for part in parts):
        raise _Unsafe(f"a global with an unusable name {qualname!r}")
    if module.split(".")[0] in _REFUSED_ROOTS:
        raise _Unsafe(qualname)
    if any(_is_dunder(part) and part != "__main__" for part in parts):
        raise _Unsafe(qualname)


# --------------------------------------------------------------------------- allowlisted builders


def _ints(value: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise _Corrupt(f"tensor {what} must be a sequence of integers, got {type(value).__name__}")
    return tuple(value)


def _strided(storage: Any, offset: Any, size: Any, stride: Any, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A view of a storage, checked against its bounds (torch would check too, less clearly)."""
    if not isinstance(storage, _Storage):
        raise _Corrupt(f"tensor rebuilt from a {type(storage).__name__} instead of a storage")
    base = storage.data
    if dtype is not None:
        base = _reinterpret(base, dtype)
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if type(offset) is not int or offset < 0 or len(size) != len(stride) or min(size + stride, default=0) < 0:
        raise _Corrupt("tensor has an invalid offset, size or stride")
    if math.prod(size) == 0:
        return torch.empty(size, dtype=base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.numel():
        raise _Corrupt(f"tensor of size {list(size)} reaches past its storage of {base.numel()} elements")
    numel = math.prod(size)
    if numel > max(_EXPAND_LIMIT * base.numel(), _EXPAND_FLOOR):
        # Zero strides are legal (saved expand() views), but a few bytes must not turn into an
        # array that OOMs whoever later calls .contiguous() on it.
        raise _Corrupt(f"tensor of size {list(size)} expands a storage of {base.numel()} elements implausibly")
    return base.as_strided(size, stride, offset)


def _reinterpret(base: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An untyped (uint8) storage seen as ``dtype``, as ``_rebuild_tensor_v3`` expects."""
    if not isinstance(dtype, torch.dtype):
        raise _Corrupt("tensor dtype is not a torch dtype")
    if dtype == base.dtype:
        return base
    if base.numel() % dtype.itemsize:
        raise _Corrupt(f"storage of {base.numel()} bytes is not a whole number of {dtype} elements")
    if dtype == torch.bool:
        return base.view(torch.uint8) != 0
    if base.data_ptr() % dtype.itemsize:
        base = base.clone()
    return base.view(torch.uint8).view(dtype)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    return _strided(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any,
                       dtype: Any, *_: Any) -> torch.Tensor:
    return _strided(storage, offset, size, stride, dtype)


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """Parameters come back as plain tensors: the values are what a checkpoint reader needs."""
    if not isinstance(data, torch.Tensor):
        raise _Corrupt("parameter data is not a tensor")
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if func not in _TENSOR_REBUILDERS or not isinstance(args, tuple):
        raise _Unsafe(f"torch._tensor._rebuild_from_type_v2 with {func!r}")
    if not (isinstance(new_type, _Marker) or _is_placeholder_class(new_type)):
        raise _Unsafe(f"torch._tensor._rebuild_from_type_v2 for {new_type!r}")
    return func(*args)


def _load_from_bytes(data: Any) -> Any:
    """``pickle.dumps(tensor)`` stores a nested ``torch.save`` blob; decode it with our own reader."""
    if type(data) is not bytes:
        raise _Corrupt("torch.storage._load_from_bytes needs bytes")
    buf = memoryview(np.frombuffer(data, dtype=np.uint8).copy())
    head = bytes(buf[:4])
    if head.startswith(b"PK\x03\x04"):
        return _decode_torch_zip(buf)[0]
    if _starts_with_legacy_magic(buf):
        return _decode_torch_legacy(buf)[0]
    raise _Corrupt("embedded torch data is neither a zip nor a legacy checkpoint")


def _torch_size(values: Any = ()) -> torch.Size:
    return torch.Size(_ints(values, "size"))


def _torch_device(kind: Any, index: Any = None) -> torch.device:
    if type(kind) is not str or not (index is None or type(index) is int):
        raise _Corrupt("torch.device needs a device name")
    return torch.device(kind) if index is None else torch.device(kind, index)


_TEXT_CODECS = {"latin1", "latin-1", "ascii", "utf-8", "utf8"}


def _codecs_encode(text: Any, encoding: Any = "utf-8", *_: Any) -> bytes:
    """What protocol-2 pickles use to carry bytes: ``_codecs.encode(str, 'latin1')``."""
    if type(text) is not str or encoding not in _TEXT_CODECS:
        raise _Unsafe(f"_codecs.encode with encoding {encoding!r}")
    return text.encode(encoding)


def _plain_constructor(kind: type, accepts: Tuple[type, ...], max_args: int) -> _Safe:
    """A builtin type callable only on already-built plain values (no ints that size memory)."""

    def build(*args: Any) -> Any:
        if len(args) > max_args or not all(type(arg) in accepts for arg in args):
            raise _Corrupt(f"builtins.{kind.__name__} called with unsupported arguments")
        if kind in (bytes, bytearray) and args and type(args[0]) is str:
            if len(args) != 2 or args[1] not in _TEXT_CODECS:
                raise _Corrupt(f"builtins.{kind.__name__} with an unsupported encoding")
        return kind(*args)

    return _Safe(f"builtins.{kind.__name__}", build)


_CONTAINERS = (list, tuple, dict, set, frozenset)
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _ordered_dict(items: Any = ()) -> collections.OrderedDict:
    if type(items) not in _CONTAINERS:
        raise _Corrupt("collections.OrderedDict called with unsupported arguments")
    return collections.OrderedDict(items)


def _defaultdict(*_: Any) -> dict:
    """The default factory is dropped: the pickle's SETITEMS fill a plain dict."""
    return {}


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Placeholder:
    if not _is_placeholder_class(cls) or base is not _OBJECT:
        raise _Unsafe(f"copyreg._reconstructor for {cls!r}")
    return cls() if state is None else cls(state)


def _copyreg_newobj(cls: Any, *args: Any) -> Placeholder:
    if not _is_placeholder_class(cls):
        raise _Unsafe(f"copyreg.__newobj__ for {cls!r}")
    return cls(*args)


def _copyreg_newobj_ex(cls: Any, args: Any, kwargs: Any) -> Placeholder:
    if not _is_placeholder_class(cls) or not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise _Unsafe(f"copyreg.__newobj_ex__ for {cls!r}")
    return cls(*args, **{str(k): v for k, v in kwargs.items()})


# ----- numpy: decoded from the pickled bytes with np.frombuffer; numpy's own code never runs on it

_DTYPE_SPEC = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,3}(\[[0-9]*[a-zA-Z]{1,2}\])?")


class _NumpyDtype:
    """The result of ``numpy.dtype(spec, align, copy)`` plus its BUILD state, as plain data."""

    __slots__ = ("spec", "byteorder", "plain")

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        self.spec = spec
        self.byteorder = "="
        self.plain = type(spec) is str and _DTYPE_SPEC.fullmatch(spec) is not None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5:
            raise _Corrupt("numpy dtype state is not a tuple")
        if state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]
        if any(part is not None for part in state[2:5]):  # subarray / names / fields: structured
            self.plain = False

    def resolve(self) -> Optional[np.dtype]:
        """The numpy dtype, or None for structured or odd dtypes (kept as placeholders)."""
        if not self.plain:
            return None
        dtype = np.dtype(self.spec)
        if self.byteorder in "<>" and dtype.byteorder != "|":
            dtype = dtype.newbyteorder(self.byteorder)
        unusable = dtype.kind == "V" or (dtype.itemsize == 0 and dtype.kind != "O")
        return None if unusable else dtype


_NDARRAY = _Marker("numpy.ndarray")
_OBJECT = _Marker("builtins.object")


class _NumpyArray:
    """Collects ``ndarray.__setstate__``; turned into a tensor (or list) after unpickling."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def finish(self) -> Any:
        state = self.state
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise _Corrupt("numpy array without a valid state")
        shape, dtype, fortran, raw = state
        self.state = None  # free the pickled bytes as soon as they are converted
        return _numpy_value(raw, dtype, _ints(shape, "shape"), "F" if fortran else "C")


_BUILDABLE = (Placeholder, _NumpyDtype, _NumpyArray)


def _numpy_reconstruct(subtype: Any, shape: Any = (0,), code: Any = b"b") -> _NumpyArray:
    if subtype is not _NDARRAY:
        raise _Unsafe(f"numpy _reconstruct of {subtype!r}")
    return _NumpyArray()


def _numpy_frombuffer(raw: Any, dtype: Any, shape: Any, order: Any) -> Any:
    """Protocol-5 pickles of numpy arrays: the data arrives in one buffer, built at once."""
    return _numpy_value(raw, dtype, _ints(shape, "shape"), "F" if order == "F" else "C")


def _numpy_value(raw: Any, dtype: Any, shape: Tuple[int, ...], order: str) -> Any:
    if not isinstance(dtype, _NumpyDtype):
        raise _Corrupt("numpy array without a dtype")
    resolved = dtype.resolve()
    if resolved is None:
        return Placeholder("numpy", "ndarray", state=(shape, dtype.spec, raw))
    count = math.prod(shape)
    if resolved.kind == "O":
        if not isinstance(raw, list) or len(raw) != count:
            raise _Corrupt("numpy object array with the wrong number of items")
        items = np.empty(count, dtype=object)
        for i, item in enumerate(raw):
            items[i] = item
        return items.reshape(shape, order=order).tolist()
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        raise _Corrupt("numpy array data is not bytes")
    view = memoryview(raw).cast("B")
    if len(view) != count * resolved.itemsize:
        raise _Corrupt(f"numpy array of shape {list(shape)} has {len(view)} bytes of data")
    array = np.frombuffer(view, dtype=resolved, count=count).reshape(shape, order=order)
    return _array_to_value(array)


def _array_to_value(array: np.ndarray) -> Any:
    """Numeric arrays become tensors (native byte order, C layout); text and dates become lists."""
    if array.dtype.kind == "b":  # any nonzero byte is True; never hand torch a bool outside {0, 1}
        return torch.from_numpy(np.ascontiguousarray(array.view(np.uint8) != 0))
    if array.dtype.kind in "iufc":
        native = np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)
        try:
            return torch.from_numpy(native)
        except TypeError:  # e.g. float128: no torch dtype
            return native.tolist()
    return array.tolist()


def _numpy_scalar(dtype: Any, raw: Any = None) -> Any:
    """A numpy scalar becomes the equivalent Python value (``np.float64(0.5)`` -> ``0.5``)."""
    if not isinstance(dtype, _NumpyDtype):
        raise _Corrupt("numpy scalar without a dtype")
    resolved = dtype.resolve()
    if resolved is None:
        return Placeholder("numpy", "scalar", args=(dtype.spec, raw))
    if resolved.kind == "O":
        return raw
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != resolved.itemsize:
        raise _Corrupt("numpy scalar data has the wrong size")
    value = np.frombuffer(raw, dtype=resolved, count=1)[0]
    return value.item()


# ----- the storage types torch's pickles name, and the allowlist itself

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "BFloat16Storage": torch.bfloat16, "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64, "UntypedStorage": torch.uint8,
}


def _torch_constants() -> Dict[str, Any]:
    """dtypes, layouts and memory formats, read from torch's namespace (not from any pickle)."""
    kinds = (torch.dtype, torch.layout, torch.memory_format)
    return {f"torch.{name}": value for name, value in vars(torch).items() if isinstance(value, kinds)}


def _build_allowlist() -> Dict[str, Any]:
    allowed: Dict[str, Any] = dict(_torch_constants())
    for name, dtype in _STORAGE_DTYPES.items():
        marker = _Marker(f"torch.{name}", dtype)
        for module in ("torch", "torch.cuda", "torch.storage"):
            allowed[f"{module}.{name}"] = marker
    tensor_marker = _Marker("torch.Tensor")
    for name in ("torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter"):
        allowed[name] = tensor_marker
    safe = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
        "torch.storage._load_from_bytes": _load_from_bytes,
        "torch.Size": _torch_size,
        "torch.device": _torch_device,
        "collections.OrderedDict": _ordered_dict,
        "collections.defaultdict": _defaultdict,
        "copyreg._reconstructor": _copyreg_reconstructor,
        "copyreg.__newobj__": _copyreg_newobj,
        "copyreg.__newobj_ex__": _copyreg_newobj_ex,
        "_codecs.encode": _codecs_encode,
        "numpy.dtype": _NumpyDtype,
    }
    for module in ("numpy.core", "numpy._core"):
        safe[f"{module}.multiarray._reconstruct"] = _numpy_reconstruct
        safe[f"{module}.multiarray.scalar"] = _numpy_scalar
        safe[f"{module}.numeric._frombuffer"] = _numpy_frombuffer
    allowed.update({name: _Safe(name, fn) for name, fn in safe.items()})
    allowed["numpy.ndarray"] = _NDARRAY
    allowed["builtins.object"] = _OBJECT
    # No ``range`` (``func(*range(10**10))`` would expand in the unpickler) and no ``str`` of a
    # container (the repr of a shared-reference DAG grows exponentially).
    for kind, accepts, max_args in (
        (set, _CONTAINERS, 1), (frozenset, _CONTAINERS, 1), (list, _CONTAINERS, 1), (tuple, _CONTAINERS, 1),
        (dict, _CONTAINERS, 1), (bytes, (bytes, str), 2), (bytearray, (bytes, str), 2),
        (complex, (int, float, str), 2), (int, (int, float, str, bool), 1), (float, (int, float, str, bool), 1),
        (str, _SCALARS, 1), (bool, _SCALARS, 1), (slice, (int, type(None)), 3),
    ):
        allowed[f"builtins.{kind.__name__}"] = _plain_constructor(kind, accepts, max_args)
    return allowed


_ALLOWED = _build_allowlist()
_TENSOR_REBUILDERS = frozenset(
    _ALLOWED[name] for name in ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
                                "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
                                "torch._utils._rebuild_parameter_with_state")
)


# --------------------------------------------------------------------------- container decoders


def _buffer_tensor(buf: memoryview, offset: int, nbytes: int, dtype: torch.dtype, little_endian: bool = True
                   ) -> torch.Tensor:
    """A flat tensor over ``buf[offset:offset+nbytes]``: a view when aligned, else a copy."""
    if nbytes == 0:
        return torch.empty(0, dtype=dtype)
    if offset < 0 or offset + nbytes > len(buf):
        raise _Corrupt("tensor data lies outside the file")
    if nbytes % dtype.itemsize:
        raise _Corrupt(f"{nbytes} bytes is not a whole number of {dtype} elements")
    raw = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes, offset=offset)
    if dtype == torch.bool:
        return raw != 0  # any nonzero byte is True; never hand torch a bool outside {0, 1}
    if little_endian != (sys.byteorder == "little") and dtype.itemsize > 1:
        unit = dtype.itemsize // 2 if dtype.is_complex else dtype.itemsize
        raw = raw.view(-1, unit).flip(1).reshape(-1)
    elif raw.data_ptr() % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype)


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if not isinstance(storage_type, _Marker) or not isinstance(storage_type.payload, torch.dtype):
        raise _Corrupt(f"unknown storage type {storage_type!r}")
    return storage_type.payload


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if type(value) is not str:
        raise _Corrupt(f"{what} is not text")
    return value


def _decode_torch_zip(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    reader = _MemoryReader(buf)
    try:
        archive = zipfile.ZipFile(reader)
    except zipfile.BadZipFile as exc:
        raise _Corrupt(f"truncated or corrupt zip archive ({one_line(exc)})") from None
    with archive:
        infos = archive.infolist()
        pickles = [info.filename for info in infos if info.filename.endswith("/data.pkl")]
        if not pickles or pickles[0].count("/") != 1:
            raise _Corrupt("zip archive is not a torch checkpoint (no <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        names = {info.filename: info for info in infos}
        if f"{prefix}constants.pkl" in names or any(name.startswith(f"{prefix}code/") for name in names):
            raise _Corrupt("this is a TorchScript archive (torch.jit.save), not a checkpoint")
        little = _zip_byteorder(archive, names, prefix)
        loaded: Dict[str, _Storage] = {}

        def storage(pid: Any) -> _Storage:
            if not isinstance(pid, tuple) or len(pid) != 5 or _text(pid[0], "persistent id") != "storage":
                raise _Corrupt("unexpected persistent id in a torch zip checkpoint")
            _, storage_type, key, _location, numel = pid
            key = _text(key, "storage key")
            dtype = _storage_dtype(storage_type)
            if key in loaded and loaded[key].data.dtype != dtype:
                raise _Corrupt(f"storage data/{key} is used with two different dtypes")
            if key not in loaded:
                info = names.get(f"{prefix}data/{key}")
                if info is None:
                    raise _Corrupt(f"storage record data/{key} is missing from the archive")
                if type(numel) is not int or numel * dtype.itemsize != info.file_size:
                    raise _Corrupt(f"storage record data/{key} has {info.file_size} bytes, not {numel} x {dtype}")
                offset = _zip_data_offset(archive, buf, info)
                loaded[key] = _Storage(_buffer_tensor(buf, offset, info.file_size, dtype, little))
            return loaded[key]

        data_info = names[pickles[0]]
        if data_info.compress_type != zipfile.ZIP_STORED:
            raise _Corrupt("data.pkl is compressed; torch never writes that")
        data = archive.read(data_info)
        obj = _SafeUnpickler(io.BytesIO(data), storage).load()
    return obj, {}


def _zip_byteorder(archive: zipfile.ZipFile, names: Dict[str, zipfile.ZipInfo], prefix: str) -> bool:
    info = names.get(f"{prefix}byteorder")
    if info is None:
        return True
    order = archive.read(info)
    if order not in (b"little", b"big"):
        raise _Corrupt(f"unknown byte order {order[:16]!r}")
    return order == b"little"


def _zip_data_offset(archive: zipfile.ZipFile, buf: memoryview, info: zipfile.ZipInfo) -> int:
    """Where a stored record's bytes start in the file, after checking its header and CRC.

    Reading through zipfile would copy every record; torch stores them uncompressed and
    aligned, so the bytes can be used in place. The CRC check (cheap next to the sha256)
    turns a flipped bit in a download into a clear error instead of silently wrong weights.
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise _Corrupt(f"storage record {info.filename} is compressed or encrypted; torch never writes that")
    start = info.header_offset
    header = bytes(buf[start : start + 30])
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise _Corrupt(f"zip local header of {info.filename} is damaged")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    offset = start + 30 + name_len + extra_len
    if offset + info.file_size > len(buf):
        raise _Corrupt(f"storage record {info.filename} ends past the end of the file (truncated?)")
    if zlib.crc32(memoryview(buf)[offset : offset + info.file_size]) != info.CRC:
        raise _Corrupt(f"storage record {info.filename} fails its CRC check (corrupt file)")
    return offset


class _LegacyStorages:
    """Storages of the legacy format: allocated while unpickling, filled from the tail after."""

    def __init__(self, budget: int) -> None:
        self.budget = budget  # no storage may claim more bytes than the file holds
        self.roots: Dict[str, _Storage] = {}
        self.views: Dict[str, _Storage] = {}

    def load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or len(pid) != 6 or _text(pid[0], "persistent id") != "storage":
            raise _Corrupt("unexpected persistent id in a legacy checkpoint")
        _, storage_type, key, _location, numel, view = pid
        key, dtype = _text(key, "storage key"), _storage_dtype(storage_type)
        if key not in self.roots:
            if type(numel) is not int or numel < 0 or numel * dtype.itemsize > self.budget:
                raise _Corrupt(f"storage {key} claims {numel} elements, more than the file holds")
            self.budget -= numel * dtype.itemsize
            self.roots[key] = _Storage(torch.empty(numel, dtype=dtype))
        root = self.roots[key]
        if view is None:
            return root
        return self._view(root, view)

    def _view(self, root: _Storage, view: Any) -> _Storage:
        if not isinstance(view, tuple) or len(view) != 3:
            raise _Corrupt("invalid storage view in a legacy checkpoint")
        view_key, offset, size = _text(view[0], "view key"), view[1], view[2]
        if type(offset) is not int or type(size) is not int or offset < 0 or size < 0 \
                or offset + size > root.data.numel():
            raise _Corrupt("storage view outside its storage")
        if view_key not in self.views:
            self.views[view_key] = _Storage(root.data[offset : offset + size])
        return self.views[view_key]

    def fill(self, buf: memoryview, pos: int, keys: Any, little: bool) -> None:
        if not isinstance(keys, list) or not all(type(key) is str for key in keys) or len(set(keys)) != len(keys):
            raise _Corrupt("legacy storage key list is invalid")
        if set(keys) != set(self.roots):
            raise _Corrupt("legacy storage key list does not match the storages the pickle uses")
        for key in keys:
            target = self.roots[key].data
            if pos + 8 > len(buf):
                raise _Corrupt("storage data ends early (truncated file)")
            numel = int.from_bytes(buf[pos : pos + 8], "little" if little else "big")
            pos += 8
            if numel != target.numel():
                raise _Corrupt(f"storage {key} holds {numel} elements, the pickle expects {target.numel()}")
            nbytes = numel * target.element_size()
            if pos + nbytes > len(buf):
                raise _Corrupt("storage data ends early (truncated file)")
            target.copy_(_buffer_tensor(buf, pos, nbytes, target.dtype, little))
            pos += nbytes


def _decode_torch_legacy(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    stream = io.BufferedReader(_MemoryReader(buf))
    if _SafeUnpickler(stream).load() != _LEGACY_MAGIC:
        raise _Corrupt("bad magic number in a legacy torch checkpoint")
    protocol = _SafeUnpickler(stream).load()
    if protocol != _LEGACY_PROTOCOL:
        raise _Corrupt(f"unsupported legacy torch protocol {protocol!r}")
    sys_info = _SafeUnpickler(stream).load()
    if not isinstance(sys_info, dict):
        raise _Corrupt("legacy torch checkpoint without system info")
    little = sys_info.get("little_endian", True) is not False
    storages = _LegacyStorages(len(buf))
    obj = _SafeUnpickler(stream, storages.load).load()
    keys = _SafeUnpickler(stream).load()
    storages.fill(buf, stream.tell(), keys, little)
    return obj, {}


def _decode_pickle(buf: memoryview) -> Tuple[Any, Dict[str, str]]:
    """A plain pickle, as Jittor's ``jt.save`` writes it (the SHA-1 trailer is optional)."""
    view = memoryview(buf)
    if len(buf) > _JITTOR_TRAILER and view[-len(_JITTOR_MAGIC):] == _JITTOR_MAGIC:
        body = view[:-_JITTOR_TRAILER]
        if hashlib.sha1(body).digest() != view[-_JITTOR_TRAILER : -len(_JITTOR_MAGIC)]:
            raise _Corrupt("corrupt Jittor checkpoint: the SHA-1 in its trailer does not match the pickle")
        view = body
    stream = io.BufferedReader(_MemoryReader(view))
    return _SafeUnpickler(stream).load(), {}


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

    ``safetensors.torch.load`` takes only ``bytes`` (a second full copy) and ``safe_open`` reads
    the file again; the checks below are the format's own rules (contiguous, in-bounds,
    sizes matching shapes and dtypes, text-only metadata).
    """
    header_len = int.from_bytes(buf[:8], "little")
    try:
        header = json.loads(bytes(buf[8 : 8 + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Corrupt(f"safetensors header is not valid JSON ({one_line(exc)})") from None
    if not isinstance(header, dict):
        raise _Corrupt("safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Corrupt("safetensors metadata must map text to text")
    entries = sorted((_safetensors_entry(name, info) for name, info in header.items()), key=lambda e: e[3])
    data_start, expected = 8 + header_len, 0
    for name, _, _, (begin, end) in entries:
        if begin != expected:
            raise _Corrupt(f"safetensors data of {name!r} does not follow the previous tensor")
        expected = end
    if data_start + expected != len(buf):
        raise _Corrupt("safetensors data section size does not match its header (truncated file?)")
    tensors = {
        name: _buffer_tensor(buf, data_start + begin, end - begin, dtype).reshape(shape)
        for name, dtype, shape, (begin, end) in entries
    }
    return tensors, dict(metadata)


def _safetensors_entry(name: str, info: Any) -> Tuple[str, torch.dtype, Tuple[int, ...], Tuple[int, int]]:
    if not isinstance(info, dict):
        raise _Corrupt(f"safetensors entry {name!r} is not an object")
    dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise _Corrupt(f"safetensors entry {name!r} has unsupported dtype {info.get('dtype')!r}")
    shape, offsets = _ints(info.get("shape"), "shape"), _ints(info.get("data_offsets"), "offsets")
    if min(shape, default=0) < 0 or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
        raise _Corrupt(f"safetensors entry {name!r} has an invalid shape or offsets")
    if math.prod(shape) * dtype.itemsize != offsets[1] - offsets[0]:
        raise _Corrupt(f"safetensors entry {name!r}: {offsets[1] - offsets[0]} bytes for shape {list(shape)}")
    return name, dtype, shape, (offsets[0], offsets[1])


_DECODERS: Dict[str, Callable[[memoryview], Tuple[Any, Dict[str, str]]]] = {
    "torch-zip": _decode_torch_zip,
    "torch-legacy": _decode_torch_legacy,
    "safetensors": _decode_safetensors,
    "jittor-pkl": _decode_pickle,
}


def _finalize(obj: Any, memo: Dict[int, Tuple[Any, Any]]) -> Any:
    """Replace numpy builders and bare storages by tensors, in place where containers allow."""
    if type(obj) in _SCALARS or isinstance(obj, (torch.Tensor, torch.dtype, type, _Safe)):
        return obj
    seen = memo.get(id(obj))
    if seen is not None:
        return seen[1]
    if isinstance(obj, _NumpyArray):
        result = _finalize(obj.finish(), memo)
    elif isinstance(obj, _Storage):
        result = obj.data
    elif isinstance(obj, dict):
        memo[id(obj)] = (obj, obj)
        for key, value in obj.items():
            obj[key] = _finalize(value, memo)
        result = obj
    elif isinstance(obj, list):
        memo[id(obj)] = (obj, obj)
        obj[:] = [_finalize(item, memo) for item in obj]
        result = obj
    elif isinstance(obj, (tuple, set, frozenset)):
        items = [_finalize(item, memo) for item in obj]
        unchanged = all(a is b for a, b in zip(items, obj))
        result = obj if unchanged else (tuple(items) if isinstance(obj, tuple) else type(obj)(items))
    elif isinstance(obj, Placeholder):
        memo[id(obj)] = (obj, obj)
        obj.args = _finalize(obj.args, memo)
        obj.state = _finalize(obj.state, memo)
        for container in (obj.kwargs, obj.listitems, obj.dictitems):
            _finalize(container, memo)
        result = obj
    else:
        result = obj
    memo[id(obj)] = (obj, result)
    return result


# --------------------------------------------------------------------------- writers


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
