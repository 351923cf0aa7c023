"""The inert values a safely unpickled file can hold: placeholders for foreign objects,
markers, storage references, and the errors the decoders raise."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch

_EXPAND_LIMIT, _EXPAND_FLOOR = 64, 1 << 24  # a view may have at most this many elements more than its storage

class UnsafeName(Exception):
    """Raised inside the unpickler; its text is the ``module.name`` that was refused."""


class CorruptData(Exception):
    """Raised by the decoders; its text is the one-line reason the bytes are unusable."""


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
