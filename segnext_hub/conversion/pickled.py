"""The inert values a safely unpickled file can hold (placeholders for foreign objects, markers,
storage references), the errors the decoders raise, and the bounds every read keeps to.

A pickle is a graph, not a tree: memo references let 40 levels of "a pair of the level below" fit in
1 KB while a naive walk, hash or ``repr`` of it visits 2**40 nodes. So everything here that looks
at unpickled values is bounded: :func:`safe_repr` stops at a character limit, :func:`hash_safe`
admits only dict keys whose hash costs a bounded walk, and :class:`ReadLimits` caps what one read
may allocate beyond the file itself.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import torch

#: Walks over unpickled values stop (with one line) past this nesting depth or object count.
#: Real checkpoints nest under 15 levels and hold well under 100,000 objects.
MAX_DEPTH = 100
MAX_OBJECTS = 500_000
_REPR_LIMIT = 120
_KEY_NODES = 64  # a dict key may be a tuple/frozenset of at most this many scalars, nested or not
_ALLOC_SLACK = 64 << 20


class UnsafeName(Exception):
    """Raised inside the unpickler; its text is the ``module.name`` that was refused."""


class CorruptData(Exception):
    """Raised by the decoders; its text is the one-line reason the bytes are unusable."""


@dataclass(eq=False, repr=False)
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

    def __repr__(self) -> str:  # the dataclass repr would quote every field, however shared or large
        return f"<placeholder {safe_repr(self.qualname)} args={safe_repr(self.args, 60)}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        # copy/deepcopy must not route the fields through our recording ``__setstate__``.
        fields = (self.module, self.name, self.args, self.state, self.kwargs, self.listitems, self.dictitems)
        return _restore_placeholder, (type(self), *fields)


def _restore_placeholder(cls: type, *fields: Any) -> Placeholder:
    obj = object.__new__(cls)
    Placeholder.__init__(obj, *fields)
    return obj


class MemoryReader(io.RawIOBase):
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
        raise UnsafeName(f"a call of {self._label}")

    @property
    def payload(self) -> Any:
        return self._fn


class _Storage:
    """A torch storage as a flat tensor of its dtype; tensors are strided views of it.

    ``typed`` keeps the storage as seen through each other dtype (``_rebuild_tensor_v3``), made
    once: a misaligned or bool view is a copy, and a file may rebuild it thousands of times.
    """

    __slots__ = ("data", "typed")

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.typed: Dict[torch.dtype, torch.Tensor] = {}


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


# --------------------------------------------------------------------------- bounded looks at values


def safe_repr(value: Any, limit: int = _REPR_LIMIT) -> str:
    """At most ``limit`` characters of ``repr(value)``, built without ever building more.

    Error messages quote values from the file; ``repr`` of a shared-reference DAG is exponentially
    long, of a huge int quadratic, and of a foreign object whatever it likes. Here every node costs at
    least one character, so at most ``limit`` nodes are visited.
    """
    out: List[str] = []
    _repr_into(value, out, [limit + 1])
    text = "".join(out)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})")}


def _repr_into(value: Any, out: List[str], room: List[int]) -> None:
    if room[0] <= 0:
        return
    kind = type(value)
    if kind in (str, bytes, bytearray):
        text = repr(value[: room[0]])
    elif kind is int:
        text = repr(value) if value.bit_length() <= 256 else f"<int of {value.bit_length()} bits>"
    elif kind in (bool, float, complex, type(None)):
        text = repr(value)
    elif kind in _BRACKETS or isinstance(value, dict):
        opening, closing = ("{", "}") if isinstance(value, dict) else _BRACKETS[kind]
        _emit(opening, out, room)
        for index, item in enumerate(value.items() if isinstance(value, dict) else value):
            if room[0] <= 0:
                return
            if index:
                _emit(", ", out, room)
            if isinstance(value, dict):
                _repr_into(item[0], out, room)
                _emit(": ", out, room)
                item = item[1]
            _repr_into(item, out, room)
        _emit("," + closing if kind is tuple and len(value) == 1 else closing, out, room)
        return
    elif isinstance(value, torch.Tensor):
        text = f"tensor(shape={list(value.shape)}, dtype={value.dtype})"
    elif isinstance(value, type):
        text = f"<class {value.__qualname__[: room[0]]}>"
    elif isinstance(value, (Placeholder, torch.dtype, _Safe)):
        text = repr(value)
    else:
        text = f"<{kind.__name__}>"
    _emit(text, out, room)


def _emit(text: str, out: List[str], room: List[int]) -> None:
    out.append(text[: room[0]])
    room[0] -= len(text)


def describe_error(exc: BaseException) -> str:
    """An exception's text, bounded: ``str(KeyError(key))`` is ``repr(key)``, whatever the key is,
    so only exceptions whose arguments are plain scalars (or a codec error) are asked for ``str``."""
    args = exc.args
    if isinstance(exc, UnicodeError) or (not isinstance(exc, KeyError) and all(
            type(arg) in (str, int, float, bool, type(None)) and not (type(arg) is int and arg.bit_length() > 256)
            for arg in args)):
        text = str(exc)
    else:
        text = safe_repr(args[0] if len(args) == 1 else args, 300)
    return text[:300] or type(exc).__name__


_HASH_SAFE_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def hash_safe(key: Any) -> bool:
    """Whether hashing ``key`` costs a bounded walk: text, numbers, bytes, objects hashed by identity
    (placeholders, tensors, dtypes, allowlisted callables), and small tuples/frozensets of those.

    A tuple does not cache its hash, so a tuple DAG as a dict key or set member would be hashed
    along every one of its paths; it is refused before anything hashes it.
    """
    return _hash_safe(key, [_KEY_NODES])


def _hash_safe(key: Any, nodes: List[int]) -> bool:
    nodes[0] -= 1
    if nodes[0] < 0:
        return False
    kind = type(key)
    if kind in _HASH_SAFE_SCALARS:
        return True
    if kind is tuple or kind is frozenset:
        return all(_hash_safe(item, nodes) for item in key)
    return isinstance(key, (Placeholder, torch.Tensor, torch.dtype, _Safe)) or _is_placeholder_class(key)


def check_keys(keys: Iterable[Any], what: str = "dict key") -> None:
    """Refuse (CorruptData) any key :func:`hash_safe` does not admit, before anything hashes it."""
    for key in keys:
        if not hash_safe(key):
            raise CorruptData(f"a {what} of type {type(key).__name__} ({safe_repr(key, 60)}); only text, numbers "
                              "and small tuples of them are accepted")


# --------------------------------------------------------------------------- what one read may allocate


class ReadLimits:
    """What one read may allocate beyond the file itself, and the values it shares.

    Every copy a decoder makes (a numpy payload turned into a tensor, a misaligned storage made
    aligned, a nested ``torch.save`` blob) is spent from ``left``: twice the file size plus 64 MiB,
    which real files never approach because each payload is in the file once. A crafted file that
    refers to one payload 2,000 times gets one shared copy (:meth:`once`) or runs out of allowance,
    instead of 2,000 copies.
    """

    def __init__(self, file_size: Optional[int]) -> None:
        self.allowance = float("inf") if file_size is None else 2 * file_size + _ALLOC_SLACK
        self.left = self.allowance
        self.nested = 0  # how deep inside nested torch.save blobs the decoders are
        self._shared: Dict[tuple, tuple] = {}

    def spend(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise CorruptData(f"{what} of {nbytes / 2**20:.1f} MiB would pass the {self.allowance / 2**20:.0f} MiB "
                              "this file may cost beyond its size (it refers to its data more often than "
                              "any checkpoint does)")
        self.left -= nbytes

    def once(self, key: tuple, keep: Any, make: Callable[[], Any]) -> Any:
        """The value ``make()`` gave the first time for ``key``; ``keep`` holds the objects whose ids
        are in the key alive, so an id cannot be recycled for another object during the read."""
        hit = self._shared.get(key)
        if hit is None:
            hit = (keep, make())
            self._shared[key] = hit
        return hit[1]


_LIMITS: contextvars.ContextVar[Optional[ReadLimits]] = contextvars.ContextVar("segnext_read_limits", default=None)


@contextlib.contextmanager
def read_limits(file_size: int) -> Iterator[ReadLimits]:
    """The bounds of one read of a ``file_size``-byte file, for the decoders called inside."""
    limits = ReadLimits(file_size)
    token = _LIMITS.set(limits)
    try:
        yield limits
    finally:
        _LIMITS.reset(token)


def current_limits() -> ReadLimits:
    """The bounds of the read in progress; unbounded (and sharing nothing) outside of one."""
    limits = _LIMITS.get()
    return ReadLimits(None) if limits is None else limits
