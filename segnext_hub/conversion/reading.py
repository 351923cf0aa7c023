"""Safe reading of checkpoints (.pth zip and legacy, .safetensors, Jittor .pkl).

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
- Paddle ``.pdparams``: a protocol-4 pickle of numpy arrays plus Paddle's name table, dropped
  here; PaddleSeg's backbone zips hold one (see :mod:`.paddle`).
- Jittor ``.pkl``: a protocol-4 pickle, optionally followed by the 20-byte SHA-1 of the pickle and
  the magic ``HCAJSLHD``. Jittor < 1.3.8.6 saved Vars as numpy arrays; later releases pickle each
  Var as ``jittor.jittor_core.Var(ndarray)``, rebuilt here as that array (jittor is never imported).

A file can be hostile as well as broken, so a read is bounded in what it may cost, whatever the
file says (see :mod:`.pickled`): walks visit each object once and stop past ``MAX_DEPTH`` levels
or ``MAX_OBJECTS`` objects, dict keys must hash in bounded time, messages quote bounded prefixes,
zip members are checked from their headers before a byte is read (torch stores them uncompressed),
and copies beyond the file itself are shared or spent from an allowance of twice the file size.

The file is read once: hashed while it is read into one writable buffer, and tensors of the zip
and safetensors formats are views into that buffer (no second copy; peak memory about the file
size). Call ``.clone()`` on a tensor to detach it from the buffer.

The pickle machinery is in :mod:`.unpickler`, the container decoders in
:mod:`.containers`, the writers in :mod:`.writing`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple, Union

import numpy as np

from ..errors import BadInputError, SegnextHubError, UnsafePickleError, one_line
from ..fileio import THREADED_HASH_MIN, StreamingSha256
from .containers import DECODERS, finalize, sniff_format
from .paddle import drop_name_table
from .pickled import CorruptData, UnsafeName, describe_error, read_limits

PathLike = Union[str, "os.PathLike[str]"]

_READ_CHUNK = 8 << 20


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found; ``obj`` is the unpickled (or safetensors) top level."""

    path: Path
    format: str
    obj: Any
    sha256: str
    metadata: Dict[str, str] = field(default_factory=dict)


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint of any supported format without executing anything it contains.

    The format comes from the content (magic bytes), not the file name. Every failure is a
    :class:`BadInputError` (or its :class:`UnsafePickleError`) with one line naming the file.
    """
    src = Path(path)
    where = _show_path(src)
    buf, digest = _read_whole_file(src, where)
    try:
        fmt = sniff_format(buf, where)
        with _decoding_errors(where), read_limits(len(buf)):
            raw, metadata = DECODERS[fmt](buf)
            sha256 = digest.hexdigest()
            del buf  # numpy payloads of a pickle are copies: free the file before converting them
            obj = finalize(raw)
            fmt, obj = drop_name_table(fmt, obj)
    finally:
        digest.close()
    return Checkpoint(path=src, format=fmt, obj=obj, sha256=sha256, metadata=metadata)


@contextlib.contextmanager
def _decoding_errors(where: str) -> Iterator[None]:
    """Turn whatever bad bytes make the decoders raise into one-line BadInputErrors."""
    try:
        yield
    except UnsafeName as exc:
        raise UnsafePickleError(
            f"refusing to load {where}: its pickle asks for {one_line(exc)}, which is not on the allowlist "
            "(nothing was executed)"
        ) from None
    except CorruptData as exc:
        raise BadInputError(f"cannot read {where}: {one_line(exc)}") from None
    except RecursionError:
        raise BadInputError(f"cannot read {where}: the pickled data nests too deeply") from None
    except SegnextHubError:
        raise
    except (EOFError, pickle.UnpicklingError) as exc:
        raise BadInputError(f"cannot read {where}: {_pickle_reason(exc)}") from exc
    except MemoryError:
        raise BadInputError(f"cannot read {where}: out of memory while decoding (corrupt size field?)") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on bad bytes is bad input
        raise BadInputError(f"cannot read {where}: {one_line(Exception(describe_error(exc)))}") from exc


def _show_path(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def _pickle_reason(exc: BaseException) -> str:
    text = describe_error(exc)
    if isinstance(exc, EOFError) or "truncated" in text or "ran out of input" in text.lower():
        return "the pickle data ends early (truncated file or incomplete download)"
    return f"corrupt pickle ({one_line(Exception(describe_error(exc)))})"


def _read_whole_file(path: Path, where: str) -> Tuple[memoryview, StreamingSha256]:
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
    digest = StreamingSha256(background=size >= THREADED_HASH_MIN)
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
