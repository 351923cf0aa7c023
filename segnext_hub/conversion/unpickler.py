"""The safe unpickler: data builders from a fixed allowlist, inert placeholders for the rest.

Pickles go through :class:`SafeUnpickler`, which never imports anything a pickle names. Its
``find_class`` answers from a fixed allowlist of data builders (tensor rebuild functions,
OrderedDict, numpy array/scalar reconstruction reimplemented here as pure data decoding) and
refuses module families that exist to run code (``os``, ``subprocess``, ``builtins``, ``torch``
and ``numpy`` beyond the allowlist...) with :class:`UnsafePickleError`. Any other name becomes
an inert placeholder *class* created on the spot: instantiating it, ``__setstate__`` and
``getattr`` on it only build :class:`Placeholder` records, so foreign objects (mmengine
``HistoryBuffer``, ``argparse.Namespace``) are readable without their package installed and
nothing of theirs can ever run. BUILD may only target those records. Dict keys and set members
must be :func:`.pickled.hash_safe` before anything hashes them (a tuple DAG as a key would take
2**depth steps to hash).

What comes back: dicts (OrderedDict kept), lists, tuples, plain values, tensors (parameters as
plain tensors, bools normalised to 0/1), numpy arrays as tensors (text/object arrays as lists),
numpy scalars as Python numbers, and Placeholders.
"""


from __future__ import annotations

import _compat_pickle
import collections
import pickle
import re
import struct
from typing import IO, Any, Callable, Dict, Optional, Tuple

from .builders import _ALLOWED, _BUILDABLE
from .pickled import (
    CorruptData,
    Placeholder,
    UnsafeName,
    _is_placeholder_class,
    _placeholder_class,
    _Safe,
    check_keys,
    safe_repr,
)


class SafeUnpickler(pickle._Unpickler):
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
            raise UnsafeName(f"a global with a non-text name ({safe_repr(module, 60)}, {safe_repr(name, 60)})")
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
                raise CorruptData("the pickle data ends early (truncated file or incomplete download)") from None
            raise
        finally:
            # The memo holds every payload; dropped now, each numpy payload can be freed as soon
            # as it is converted instead of when this unpickler is collected.
            self.memo = {}
            self.stack, self.metastack = [], []

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise CorruptData("a plain pickle must not contain persistent ids")
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
                raise UnsafeName("BUILD on an OrderedDict with attributes other than _metadata")
            if "_metadata" in state:
                target._metadata = state["_metadata"]  # type: ignore[attr-defined]
            return
        if not isinstance(target, _BUILDABLE):
            raise UnsafeName(f"BUILD (setting state) on a real {type(target).__name__} object")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = _load_build

    # Every opcode that hashes what the pickle built: keys are checked first, targets restricted.
    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        _set_items(self.stack[-1], [key, value])

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        _set_items(self.stack[-1], items)

    def _load_dict(self) -> None:
        items = self.pop_mark()
        check_keys(items[0::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})

    def _load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise CorruptData(f"ADDITEMS on a {type(target).__name__}, not a set")
        check_keys(items, "set member")
        target.update(items)

    def _load_frozenset(self) -> None:
        items = self.pop_mark()
        check_keys(items, "set member")
        self.append(frozenset(items))

    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch[pickle.FROZENSET[0]] = _load_frozenset

    def _placeholder(self, module: str, name: str) -> type:
        key = f"{module}.{name}"
        if key not in self._classes:
            self._classes[key] = _placeholder_class(module, name)
        return self._classes[key]

    def _placeholder_getattr(self, obj: Any, attr: Any, *default: Any) -> Any:
        """``getattr`` on a placeholder names another placeholder; on anything real it is refused."""
        if not (_is_placeholder_class(obj) or isinstance(obj, Placeholder)):
            raise UnsafeName(f"builtins.getattr on a real {type(obj).__name__} object")
        if type(attr) is not str or not _NAME_PART.fullmatch(attr) or _is_dunder(attr):
            raise UnsafeName(f"builtins.getattr({safe_repr(obj.qualname)}, {safe_repr(attr, 60)})")
        return self._placeholder(obj.module, f"{obj.name}.{attr}")


def _set_items(target: Any, items: list) -> None:
    """SETITEM(S): only dicts (OrderedDict included) and placeholder records take items."""
    if not isinstance(target, (dict, Placeholder)):
        raise CorruptData(f"SETITEMS on a {type(target).__name__}, not a dict")
    check_keys(items[0::2])
    for i in range(0, len(items) - 1, 2):
        target[items[i]] = items[i + 1]


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
        raise UnsafeName(f"a global with an unusable name {safe_repr(qualname)}")
    if module.split(".")[0] in _REFUSED_ROOTS:
        raise UnsafeName(qualname)
    if any(_is_dunder(part) and part != "__main__" for part in parts):
        raise UnsafeName(qualname)
