"""PaddlePaddle containers, read without Paddle: ``.pdparams`` files and PaddleSeg backbone zips.

What PaddleSeg 2.8 writes (read in its source and checked on files it wrote under PaddlePaddle
3.3.1): ``paddle.save(model.state_dict(), "model.pdparams")`` is a protocol-4 pickle of a dict
of numpy arrays (``numpy.core.multiarray._reconstruct``, decoded by the safe unpickler like
any other pickle), plus one entry that is no weight: ``StructuredToParameterName@@``, Paddle's
table from structured names to its internal parameter names (``conv2d_0.w_0``...). The table
is dropped here, where the container is taken apart, so later steps see a plain state dict.

PaddleSeg's ImageNet backbones are published as zips (``mscan_t_imagenet_pretrained.zip``).
``paddleseg.utils.download_pretrained_model`` extracts them and reads
``<first entry>/model.pdparams``: the first member is a folder holding ``model.pdparams``.
That is the one shape read here; a zip holding anything else is refused with a list of what
it holds. Unlike torch's zips, these members may be deflated, so the decompressed size is
checked against the member's header and spent from the read's allowance before a byte is
inflated.

:func:`write_pdparams` writes the way back (``segnext-convert X OUT.pdparams --to paddle``).
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from typing import IO, Any, List, Mapping, Tuple

import numpy as np

from ..fileio import atomic_writer
from .pickled import CorruptData, MemoryReader, current_limits, safe_repr

#: Paddle's structured-name -> parameter-name table that ``paddle.save`` adds to a state dict.
NAME_TABLE = "StructuredToParameterName@@"
MODEL_MEMBER = "model.pdparams"
_READ_CHUNK = 8 << 20
_SHOWN_MEMBERS = 6


def is_paddle_zip(buf: memoryview) -> bool:
    """True for a zip that holds a ``model.pdparams`` and no torch ``data.pkl``."""
    try:
        with zipfile.ZipFile(MemoryReader(buf)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False
    has_model = any(name == MODEL_MEMBER or name.endswith("/" + MODEL_MEMBER) for name in names)
    return has_model and not any(name.endswith("/data.pkl") for name in names)


def zip_model_member(buf: memoryview) -> memoryview:
    """The bytes of the ``<folder>/model.pdparams`` inside a PaddleSeg backbone zip.

    Raises:
        CorruptData: the zip holds anything but one folder with its ``model.pdparams``, a
            member is encrypted or compressed with a method PaddleSeg's downloads do not use,
            or the inflated bytes do not match the member's declared size and CRC.
    """
    try:
        archive = zipfile.ZipFile(MemoryReader(buf))
    except zipfile.BadZipFile as exc:
        raise CorruptData(f"truncated or corrupt zip archive ({safe_repr(str(exc), 80)})") from None
    with archive:
        infos = archive.infolist()
        info = _the_model_member(infos)
        if info.flag_bits & 0x1:
            raise CorruptData(f"zip member {safe_repr(info.filename)} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CorruptData(f"zip member {safe_repr(info.filename)} uses compression method "
                              f"{info.compress_type}; PaddleSeg's zips are stored or deflated")
        current_limits().spend(info.file_size, f"the inflated {info.filename}")
        out = np.empty(info.file_size, dtype=np.uint8)
        view, pos = memoryview(out), 0
        try:
            with archive.open(info) as member:  # zipfile stops at file_size and checks the CRC at the end
                while True:
                    got = member.readinto(view[pos:]) if pos < len(view) else len(member.read(1))
                    if not got:
                        break
                    if pos >= len(view):
                        raise CorruptData(f"zip member {safe_repr(info.filename)} inflates past its declared size")
                    pos += got
        except zipfile.BadZipFile as exc:
            raise CorruptData(f"zip member {safe_repr(info.filename)}: {safe_repr(str(exc), 80)} "
                              "(corrupt or truncated file)") from None
        except EOFError:
            raise CorruptData(f"zip member {safe_repr(info.filename)} ends early (truncated file)") from None
        if pos != info.file_size:
            raise CorruptData(f"zip member {safe_repr(info.filename)} holds {pos} bytes, its header says "
                              f"{info.file_size}")
    return view


def _the_model_member(infos: List[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The zip must be what PaddleSeg's downloader reads: a folder first, its model.pdparams."""
    names = [info.filename for info in infos]
    shown = ", ".join(safe_repr(name, 60) for name in names[:_SHOWN_MEMBERS])
    shown += f" (and {len(names) - _SHOWN_MEMBERS} more)" if len(names) > _SHOWN_MEMBERS else ""
    expected = "expected one folder holding model.pdparams, as PaddleSeg's backbone downloads are"
    if not infos or not infos[0].is_dir() or infos[0].filename.count("/") != 1:
        raise CorruptData(f"zip does not start with a folder ({shown or 'empty'}); {expected}")
    folder = infos[0].filename
    files = [info for info in infos if not info.is_dir()]
    stray = [info.filename for info in infos if not info.filename.startswith(folder)]
    model = [info for info in files if info.filename == folder + MODEL_MEMBER]
    if stray or len(files) != 1 or not model:
        raise CorruptData(f"unexpected zip content ({shown}); {expected}")
    return model[0]


def drop_name_table(fmt: str, obj: Any) -> Tuple[str, Any]:
    """Take Paddle's parameter-name table out of a decoded pickle; name the format by what it is.

    A top-level dict whose ``StructuredToParameterName@@`` maps text to text is a
    ``paddle.save`` state dict: the table goes and a bare pickle is called ``paddle-pdparams``.
    Anything else is returned unchanged.
    """
    if fmt not in ("jittor-pkl", "paddle-zip") or not isinstance(obj, dict):
        return fmt, obj
    table = obj.get(NAME_TABLE)
    if not isinstance(table, dict) or not all(type(k) is str and type(v) is str for k, v in table.items()):
        return fmt, obj
    del obj[NAME_TABLE]
    return ("paddle-pdparams" if fmt == "jittor-pkl" else fmt), obj


class _PaddlePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 4, numpy arrays named as numpy 1.x names them (``numpy.core.multiarray``).

    numpy 2 pickles its arrays under ``numpy._core``, which numpy releases before 1.26 cannot
    import; PaddlePaddle runs on numpy 1.x and 2.x alike, so the older name is written (numpy 2
    still resolves it).
    """

    _RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]

    def save_global(self, obj: Any, name: Any = None) -> None:
        if obj is self._RECONSTRUCT:
            self.save("numpy.core.multiarray")
            self.save("_reconstruct")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def write_pdparams(path: Any, tensors: Mapping[str, Any], *, force: bool = False) -> str:
    """Write ``tensors`` (Paddle-named) as ``paddle.save(state_dict)`` would, atomically; return the sha256.

    A dict of C-contiguous numpy arrays, pickled with protocol 4, which ``paddle.load`` and
    PaddleSeg's ``load_entire_model`` read (checked in the parity tests). Paddle's name table is
    left out: it maps to internal names only a live Paddle program has, and the loaders use the
    structured names.
    """
    arrays = {key: np.ascontiguousarray(value.detach().cpu().numpy()) for key, value in tensors.items()}
    with atomic_writer(path, force=force, expected_size=sum(a.nbytes for a in arrays.values())) as handle:
        hashing = _Hashing(handle)
        _PaddlePickler(hashing, protocol=4).dump(arrays)
    return hashing.digest.hexdigest()


class _Hashing:
    """A write-only file that hashes what passes through."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.handle.write(data)
