"""The cache manifest: what a pull recorded about one entry's files, typed and checked.

``manifest.json`` is the last file a pull writes; its presence means "everything listed is
complete". In the documented team cache it is group-writable, so it is input like any
other: every file name in it must be a plain relative name inside the entry folder
(:func:`plain_name`), every size a count, every hash 64 hex digits. Anything else is a
:class:`ManifestError` that the entry reports as DAMAGED (with the repair command), so no
command ever reads, hashes or deletes a path the manifest made up.

Versions: 1 (before per-file records: the raw and weights hashes only) and 2 (``files``
records the size and sha256 of every file) are read; 2 is written. Fields a later version
adds are ignored. ``tests/data/manifests/`` keeps files written by earlier versions.
No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import ManifestError
from .config import CONFIG_FILE, MODEL_FILE

MANIFEST_VERSION = 2  # 2: 'files' records size + sha256 of every file
READ_VERSIONS = (1, 2)
#: A real entry holds a handful of files; a manifest listing more is not ours.
MAX_FILES = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 255


def plain_name(rel: Any, what: str = "a file name") -> str:
    """``rel`` when it is a plain relative name inside an entry folder, else ManifestError.

    Plain means: text of at most 255 characters, ``/``-separated parts none of which is
    empty, ``.`` or ``..``; no backslash, NUL or other control character; not absolute. A
    symlink or non-regular file under a plain name is caught when the file is opened
    (:mod:`segnext_hub.hub.entry`), since only the disk knows.

    Raises:
        ManifestError: naming ``what`` and why the name is refused.
    """
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"{what} is not a file name")
    shown = ascii(rel)[1:-1][:80]  # control characters escaped; no codec lookup (a dropped user may not import one)
    if len(rel) > _MAX_NAME or any(ord(ch) < 32 or ord(ch) == 127 for ch in rel) or "\\" in rel:
        raise ManifestError(f"{what} '{shown}' is not a plain file name")
    if rel.startswith("/") or re.match(r"[A-Za-z]:", rel):
        raise ManifestError(f"{what} '{shown}' is an absolute path, outside the entry")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise ManifestError(f"{what} '{shown}' leaves the entry folder (or has an empty part)")
    return rel


@dataclass(frozen=True)
class FileRecord:
    """What a pull measured of one file: its size (None in version 1) and sha256."""

    size: Optional[int]
    sha256: Optional[str]

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def _size(value: Any, what: str) -> Optional[int]:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ManifestError(f"{what} {str(value)[:40]!r} is not a byte count")
    return value


def _sha(value: Any, what: str) -> Optional[str]:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(f"{what} {str(value)[:40]!r} is not a sha256")
    return value


def _text(value: Any, what: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise ManifestError(f"{what} is not text")
    return value


def _texts(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > 256:
        raise ManifestError(f"{what} is not a list of lines")
    return tuple(_text(v, what) or "" for v in value)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{what} is not an object")
    return value


@dataclass(frozen=True)
class Manifest:
    """One entry's manifest. ``files`` maps each plain relative name to what was measured;
    ``raw_file``/``log_file`` name the published download and training log inside the
    entry. The rest is provenance for ``info`` and model cards (hash policy outcome,
    the artifact's record, the conversion report), kept as the pull wrote it."""

    name: str
    complete: bool
    files: Mapping[str, FileRecord]
    raw_file: Optional[str] = None
    raw_sha256: Optional[str] = None
    raw_size: Optional[int] = None
    model_file: str = MODEL_FILE
    model_sha256: Optional[str] = None
    log_file: Optional[str] = None
    log_error: Optional[str] = None
    url: Optional[str] = None
    hash_prefix: Optional[str] = None
    pinned_sha256: Optional[str] = None
    hash_status: Optional[str] = None
    warnings: tuple[str, ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict)
    record_disagreements: tuple[str, ...] = ()
    conversion: Mapping[str, Any] = field(default_factory=dict)
    pulled_at: Optional[str] = None
    segnext_hub_version: Optional[str] = None
    random_weights: Optional[str] = None  # why the weights are not the published ones (make demo)
    manifest_version: int = MANIFEST_VERSION

    @property
    def verification(self) -> Mapping[str, Any]:
        """The conversion's numerical check (``verified``, ``max_abs_diff``, inputs)."""
        value = self.conversion.get("verification")
        return value if isinstance(value, dict) else {}

    def with_required(self) -> dict[str, FileRecord]:
        """``files`` plus the two files every load reads (unrecorded in version 1)."""
        records = dict(self.files)
        for required in (MODEL_FILE, CONFIG_FILE):
            records.setdefault(required, FileRecord(None, None))
        return records

    def to_json(self) -> dict[str, Any]:
        """The manifest.json object (version :data:`MANIFEST_VERSION`)."""
        return {
            "manifest_version": MANIFEST_VERSION, "complete": self.complete, "name": self.name, "url": self.url,
            "raw_file": self.raw_file, "raw_sha256": self.raw_sha256, "raw_size": self.raw_size,
            "hash_prefix": self.hash_prefix, "pinned_sha256": self.pinned_sha256, "hash_status": self.hash_status,
            "warnings": list(self.warnings), "model_file": self.model_file, "model_sha256": self.model_sha256,
            "log_file": self.log_file, "log_error": self.log_error, "record": dict(self.record),
            "record_disagreements": list(self.record_disagreements),
            "files": {rel: rec.to_json() for rel, rec in self.files.items()},
            "conversion": dict(self.conversion), "pulled_at": self.pulled_at,
            "segnext_hub_version": self.segnext_hub_version, "random_weights": self.random_weights,
        }

    @classmethod
    def from_json(cls, data: Any, name: str) -> "Manifest":
        """A manifest.json object of any version this release reads.

        Raises:
            ManifestError: not an object, an unknown version, a file name outside the entry,
                or a value of the wrong kind (the message says which).
        """
        if not isinstance(data, dict):
            raise ManifestError("it does not hold a JSON object")
        version = data.get("manifest_version", 1)
        if version not in READ_VERSIONS:
            raise ManifestError(f"manifest_version {str(version)[:20]!r} is not one this release reads "
                                f"({', '.join(map(str, READ_VERSIONS))}); pull it again with this release")
        if data.get("name", name) != name:
            raise ManifestError(f"it describes {str(data.get('name'))[:60]!r}, not {name}")
        raw_file = None if data.get("raw_file") is None else plain_name(data["raw_file"], "raw_file")
        model_file = plain_name(data.get("model_file") or MODEL_FILE, "model_file")
        if model_file != MODEL_FILE:
            raise ManifestError(f"model_file {model_file!r} is not {MODEL_FILE}")
        log_file = None if data.get("log_file") is None else plain_name(data["log_file"], "log_file")
        if version >= 2:
            files = cls._files(data.get("files"))
        else:  # version 1 kept two hashes, the raw file's size, and no record of the rest
            files = {}
            if raw_file:
                files[raw_file] = FileRecord(_size(data.get("raw_size"), "raw_size"),
                                             _sha(data.get("raw_sha256"), "raw_sha256"))
            files[model_file] = FileRecord(None, _sha(data.get("model_sha256"), "model_sha256"))
        return cls(
            name=name, complete=data.get("complete") is True, files=files, raw_file=raw_file,
            raw_sha256=_sha(data.get("raw_sha256"), "raw_sha256"), raw_size=_size(data.get("raw_size"), "raw_size"),
            model_file=model_file, model_sha256=_sha(data.get("model_sha256"), "model_sha256"), log_file=log_file,
            log_error=_text(data.get("log_error"), "log_error"), url=_text(data.get("url"), "url"),
            hash_prefix=_text(data.get("hash_prefix"), "hash_prefix"),
            pinned_sha256=_sha(data.get("pinned_sha256"), "pinned_sha256"),
            hash_status=_text(data.get("hash_status"), "hash_status"), warnings=_texts(data.get("warnings"), "warnings"),
            record=_mapping(data.get("record"), "record"),
            record_disagreements=_texts(data.get("record_disagreements"), "record_disagreements"),
            conversion=_mapping(data.get("conversion"), "conversion"),
            pulled_at=_text(data.get("pulled_at"), "pulled_at"),
            segnext_hub_version=_text(data.get("segnext_hub_version"), "segnext_hub_version"),
            random_weights=_text(data.get("random_weights"), "random_weights"),
            manifest_version=version)

    @staticmethod
    def _files(value: Any) -> dict[str, FileRecord]:
        if not isinstance(value, dict) or len(value) > MAX_FILES:
            raise ManifestError(f"files is not an object of at most {MAX_FILES} records")
        files = {}
        for rel, rec in value.items():
            where = f"files[{plain_name(rel)!r}]"
            if not isinstance(rec, dict):
                raise ManifestError(f"{where} is not a record")
            files[rel] = FileRecord(_size(rec.get("size"), f"{where}.size"), _sha(rec.get("sha256"), f"{where}.sha256"))
        return files
