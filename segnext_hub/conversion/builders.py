"""The allowlist: what each permitted pickle global is rebuilt as, by pure data decoding.

Tensor rebuild functions, OrderedDict and friends, numpy arrays, dtypes and scalars
(decoded from their bytes with ``np.frombuffer``; numpy's own code never runs on them),
Jittor's ``Var`` (rebuilt as the numpy array it was pickled with), and the storage types
torch pickles name. Nothing here imports what a pickle names. Builders that hash, quote or
copy what the pickle gave them do so within the bounds of :mod:`.pickled`.
"""

from __future__ import annotations

import collections
import math
import pickle
import re
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .pickled import (
    CorruptData,
    Placeholder,
    UnsafeName,
    _is_placeholder_class,
    _Marker,
    _Safe,
    _Storage,
    check_keys,
    current_limits,
    safe_repr,
)

_EXPAND_LIMIT, _EXPAND_FLOOR = 64, 1 << 24  # a view may have at most this many elements more than its storage

def _ints(value: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise CorruptData(f"tensor {what} must be a sequence of integers, got {type(value).__name__}")
    return tuple(value)


def _strided(storage: Any, offset: Any, size: Any, stride: Any, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A view of a storage, checked against its bounds (torch would check too, less clearly)."""
    if not isinstance(storage, _Storage):
        raise CorruptData(f"tensor rebuilt from a {type(storage).__name__} instead of a storage")
    base = storage.data if dtype is None else _typed(storage, dtype)
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if type(offset) is not int or offset < 0 or len(size) != len(stride) or min(size + stride, default=0) < 0:
        raise CorruptData("tensor has an invalid offset, size or stride")
    if math.prod(size) == 0:
        return torch.empty(size, dtype=base.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= base.numel():
        raise CorruptData(f"tensor of size {safe_repr(list(size))} reaches past its storage of {base.numel()} elements")
    numel = math.prod(size)
    if numel > max(_EXPAND_LIMIT * base.numel(), _EXPAND_FLOOR):
        # Zero strides are legal (saved expand() views), but a few bytes must not turn into an
        # array that OOMs whoever later calls .contiguous() on it.
        raise CorruptData(f"tensor of size {safe_repr(list(size))} expands a storage of {base.numel()} elements "
                          "implausibly")
    return base.as_strided(size, stride, offset)


def _typed(storage: _Storage, dtype: Any) -> torch.Tensor:
    """An untyped (uint8) storage seen as ``dtype``, as ``_rebuild_tensor_v3`` expects; made once
    per storage and dtype, so a file that rebuilds one misaligned storage 2,000 times gets one copy."""
    if not isinstance(dtype, torch.dtype):
        raise CorruptData("tensor dtype is not a torch dtype")
    base = storage.data
    if dtype == base.dtype:
        return base
    typed = storage.typed.get(dtype)
    if typed is None:
        typed = storage.typed[dtype] = _reinterpret(base, dtype)
    return typed


def _reinterpret(base: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if base.numel() % dtype.itemsize:
        raise CorruptData(f"storage of {base.numel()} bytes is not a whole number of {dtype} elements")
    if dtype == torch.bool:
        current_limits().spend(base.numel(), "a bool view of a storage")
        return base.view(torch.uint8) != 0
    if base.data_ptr() % dtype.itemsize:
        current_limits().spend(base.numel() * base.element_size(), "an aligned copy of a misaligned storage")
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
        raise CorruptData("parameter data is not a tensor")
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if not any(func is rebuild for rebuild in _TENSOR_REBUILDERS) or not isinstance(args, tuple):
        raise UnsafeName(f"torch._tensor._rebuild_from_type_v2 with {safe_repr(func)}")
    if not (isinstance(new_type, _Marker) or _is_placeholder_class(new_type)):
        raise UnsafeName(f"torch._tensor._rebuild_from_type_v2 for {safe_repr(new_type)}")
    return func(*args)


def _torch_size(values: Any = ()) -> torch.Size:
    return torch.Size(_ints(values, "size"))


def _torch_device(kind: Any, index: Any = None) -> torch.device:
    if type(kind) is not str or not (index is None or type(index) is int):
        raise CorruptData("torch.device needs a device name")
    return torch.device(kind) if index is None else torch.device(kind, index)


_TEXT_CODECS = {"latin1", "latin-1", "ascii", "utf-8", "utf8"}


def _codecs_encode(text: Any, encoding: Any = "utf-8", *_: Any) -> bytes:
    """What protocol-2 pickles use to carry bytes: ``_codecs.encode(str, 'latin1')``."""
    if type(text) is not str or type(encoding) is not str or encoding not in _TEXT_CODECS:
        raise UnsafeName(f"_codecs.encode with encoding {safe_repr(encoding)}")
    return text.encode(encoding)


def _plain_constructor(kind: type, accepts: Tuple[type, ...], max_args: int) -> _Safe:
    """A builtin type callable only on already-built plain values (no ints that size memory)."""

    def build(*args: Any) -> Any:
        if len(args) > max_args or not all(type(arg) in accepts for arg in args):
            raise CorruptData(f"builtins.{kind.__name__} called with unsupported arguments")
        if kind in (set, frozenset) and args:
            check_keys(args[0], "set member")
        elif kind is dict and args:
            _check_pairs(args[0], "builtins.dict")
        if kind in (bytes, bytearray) and args and type(args[0]) is str:
            if len(args) != 2 or args[1] not in _TEXT_CODECS:
                raise CorruptData(f"builtins.{kind.__name__} with an unsupported encoding")
        return kind(*args)

    return _Safe(f"builtins.{kind.__name__}", build)


_CONTAINERS = (list, tuple, dict, set, frozenset)
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _ordered_dict(items: Any = ()) -> collections.OrderedDict:
    if type(items) not in _CONTAINERS:
        raise CorruptData("collections.OrderedDict called with unsupported arguments")
    _check_pairs(items, "collections.OrderedDict")
    return collections.OrderedDict(items)


def _check_pairs(items: Any, what: str) -> None:
    """What ``dict(items)`` would hash: the keys of a mapping, or of each (key, value) pair."""
    if isinstance(items, dict):
        return  # its keys passed the unpickler's check when it was built
    for pair in items:
        if type(pair) not in (tuple, list) or len(pair) != 2:
            raise CorruptData(f"{what} called with items that are not (key, value) pairs")
    check_keys(pair[0] for pair in items)


def _defaultdict(*_: Any) -> dict:
    """The default factory is dropped: the pickle's SETITEMS fill a plain dict."""
    return {}


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Placeholder:
    if not _is_placeholder_class(cls) or base is not _OBJECT:
        raise UnsafeName(f"copyreg._reconstructor for {safe_repr(cls)}")
    return cls() if state is None else cls(state)


def _copyreg_newobj(cls: Any, *args: Any) -> Placeholder:
    if not _is_placeholder_class(cls):
        raise UnsafeName(f"copyreg.__newobj__ for {safe_repr(cls)}")
    return cls(*args)


def _copyreg_newobj_ex(cls: Any, args: Any, kwargs: Any) -> Placeholder:
    if not _is_placeholder_class(cls) or not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise UnsafeName(f"copyreg.__newobj_ex__ for {safe_repr(cls)}")
    if not all(type(key) is str for key in kwargs):
        raise CorruptData("copyreg.__newobj_ex__ with keyword names that are not text")
    return cls(*args, **kwargs)


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
            raise CorruptData("numpy dtype state is not a tuple")
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

    def __init__(self, state: Any = None) -> None:
        self.state: Any = state

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def _parts(self) -> Tuple[Any, Any, bool, Any]:
        state = self.state
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4 or type(state[2]) not in (bool, int):
            raise CorruptData("numpy array without a valid state")
        shape, dtype, fortran, raw = state
        return _ints(shape, "shape"), dtype, bool(fortran), raw

    def share_key(self) -> tuple:
        """Arrays made from the very same payload object with the same dtype, shape and order are one
        value (numpy never pickles two arrays over one bytes object; a crafted file may, 2,000 times).

        The key holds the payload's ``id``: sound while converting one unpickled tree, because every
        payload a pending array refers to is alive, so no id can be that of a payload freed earlier.
        """
        shape, dtype, fortran, raw = self._parts()
        if not isinstance(dtype, _NumpyDtype) or type(dtype.spec) is not str:
            raise CorruptData("numpy array without a dtype")
        return id(raw), dtype.spec, dtype.byteorder, shape, fortran

    def finish(self) -> Any:
        shape, dtype, fortran, raw = self._parts()
        self.state = None  # free the pickled bytes as soon as they are converted
        return _numpy_value(raw, dtype, shape, "F" if fortran else "C")


_BUILDABLE = (Placeholder, _NumpyDtype, _NumpyArray)


def _numpy_reconstruct(subtype: Any, shape: Any = (0,), code: Any = b"b") -> _NumpyArray:
    if subtype is not _NDARRAY:
        raise UnsafeName(f"numpy _reconstruct of {safe_repr(subtype)}")
    return _NumpyArray()


def _numpy_frombuffer(raw: Any, dtype: Any, shape: Any, order: Any) -> _NumpyArray:
    """Protocol-5 pickles of numpy arrays: the data arrives in one buffer; converted (and shared)
    after unpickling like every other array."""
    return _NumpyArray((shape, dtype, type(order) is str and order == "F", raw))


def _jittor_var(*args: Any, **kwargs: Any) -> Any:
    """``jittor.jittor_core.Var(ndarray)``: what ``Var.__reduce__`` pickles (Jittor >= 1.3.9 saves Vars
    as they are; see tests/data/jittor/README.md). The call holds one numpy array and nothing else,
    so the value is that array, converted like any other (int64 stays int64; bfloat16 arrives as
    the uint16 bits Jittor stored). Nothing of Jittor is imported; any other ``jittor.*`` is refused."""
    if kwargs or len(args) != 1 or not isinstance(args[0], _NumpyArray):
        shown = type(args[0]).__name__ if len(args) == 1 else f"{len(args)} arguments"
        raise CorruptData(f"jittor Var rebuilt from {shown}{' and keywords' * bool(kwargs)}, not one numpy array")
    return args[0]


def _numpy_value(raw: Any, dtype: Any, shape: Tuple[int, ...], order: str) -> Any:
    if not isinstance(dtype, _NumpyDtype):
        raise CorruptData("numpy array without a dtype")
    resolved = dtype.resolve()
    if resolved is None:
        return Placeholder("numpy", "ndarray", state=(shape, dtype.spec, raw))
    count = math.prod(shape)
    if count < 0:
        raise CorruptData(f"numpy array of shape {safe_repr(list(shape))}")
    if resolved.kind == "O":
        if not isinstance(raw, list) or len(raw) != count:
            raise CorruptData("numpy object array with the wrong number of items")
        items = np.empty(count, dtype=object)
        for i, item in enumerate(raw):
            items[i] = item
        return items.reshape(shape, order=order).tolist()
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
        raise CorruptData("numpy array data is not bytes")
    view = memoryview(raw).cast("B")
    if len(view) != count * resolved.itemsize:
        raise CorruptData(f"numpy array of shape {safe_repr(list(shape))} has {len(view)} bytes of data")
    current_limits().spend(len(view), "a numpy array")
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
        raise CorruptData("numpy scalar without a dtype")
    resolved = dtype.resolve()
    if resolved is None:
        return Placeholder("numpy", "scalar", args=(dtype.spec, raw))
    if resolved.kind == "O":
        return raw
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != resolved.itemsize:
        raise CorruptData("numpy scalar data has the wrong size")
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
        "torch.Size": _torch_size,
        "torch.device": _torch_device,
        "collections.OrderedDict": _ordered_dict,
        "collections.defaultdict": _defaultdict,
        "copyreg._reconstructor": _copyreg_reconstructor,
        "copyreg.__newobj__": _copyreg_newobj,
        "copyreg.__newobj_ex__": _copyreg_newobj_ex,
        "_codecs.encode": _codecs_encode,
        "numpy.dtype": _NumpyDtype,
        "jittor.jittor_core.Var": _jittor_var,
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


def allow_nested_loader(loader: Callable[[Any], Any]) -> None:
    """Register the decoder of ``torch.storage._load_from_bytes`` (a nested torch.save blob).

    The container decoders own that format and register it here, so this module does not
    import them back.
    """
    _ALLOWED["torch.storage._load_from_bytes"] = loader
_TENSOR_REBUILDERS = frozenset(
    _ALLOWED[name] for name in ("torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
                                "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
                                "torch._utils._rebuild_parameter_with_state")
)
