"""One cache entry: ``<cache>/<name>/`` and the files its manifest vouches for.

Every command that reads a cached artifact goes through a :class:`CacheEntry`: it names
the entry's files (the published download, the weights, config.json, the training log,
the manifest) and opens them only as regular files inside the entry folder, reached
without following a symbolic link (:func:`segnext_hub.fileio.open_confined`). A manifest
that names anything else, or a file that is a link, FIFO or device, makes the entry
DAMAGED with the reason and the repair command; nothing outside the folder is read,
hashed or deleted. (In the documented team cache the folder is group-writable: a
group member's edit must not reach another member's files.)

Files in an entry are written read-only and replaced only by renaming a whole new entry
into place (:mod:`segnext_hub.hub.pull`), so a memory-mapped model never sees its file
change under it. No torch here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ..config import ArtifactConfig
from ..errors import BadInputError, DamagedEntryError, ManifestError
from ..fileio import MAX_JSON_BYTES, MAX_LOG_BYTES, open_confined, parse_json, read_confined, sha256_handle
from .cache import MANIFEST, artifact_dir, damaged, read_manifest, use_lock, validate_name
from .config import CONFIG_FILE, MODEL_FILE
from .manifest import FileRecord, Manifest

CACHED, NOT_CACHED, DAMAGED = "cached", "not cached", "damaged"


class CacheEntry:
    """The entry of registry artifact ``name`` (which need not be cached yet).

    Nothing is read on construction; each method reads what it needs, at that moment.
    """

    def __init__(self, name: str) -> None:
        self.name = validate_name(name)

    def __repr__(self) -> str:
        return f"CacheEntry({self.name!r})"

    @property
    def folder(self) -> Path:
        """``<cache>/<name>`` (not created)."""
        return artifact_dir(self.name)

    def damaged(self, problem: str, *, force: bool = True) -> DamagedEntryError:
        """The one wording for this entry's damage, with its repair command."""
        return damaged(self.name, problem, force=force)

    # ------------------------------------------------------------------ the folder and its files

    def exists(self) -> bool:
        """Whether the entry folder is there (a link in its place counts: it is damage)."""
        return os.path.lexists(self.folder)

    def open(self, rel: str) -> Any:
        """A binary read handle on ``rel``, a regular file inside the entry.

        Raises:
            FileNotFoundError: the file (or the entry) is not there.
            DamagedEntryError: a link, FIFO or device in its place, or a name leaving the entry.
        """
        try:
            return open_confined(self.folder, rel)
        except BadInputError as err:
            raise self.damaged(str(err)) from None

    def read_bytes(self, rel: str, max_bytes: int) -> bytes:
        """The whole of ``rel`` (see :meth:`open`), at most ``max_bytes``."""
        try:
            return read_confined(self.folder, rel, max_bytes)
        except BadInputError as err:
            raise self.damaged(str(err)) from None

    def path(self, rel: str) -> Path:
        """``folder/rel`` after checking it is a regular file inside the entry, for readers
        that need a path (the weights' memory map). The check is made at this moment.

        Raises:
            DamagedEntryError: missing, or not a regular file inside the entry.
        """
        try:
            self.open(rel).close()
        except FileNotFoundError:
            raise self.damaged(f"{rel} is missing") from None
        return self.folder / rel

    @property
    def weights(self) -> Path:
        """The checked path of model.safetensors."""
        return self.path(MODEL_FILE)

    @property
    def config_path(self) -> Path:
        """The checked path of config.json."""
        return self.path(CONFIG_FILE)

    def raw_path(self, manifest: Manifest) -> Path:
        """The checked path of the published download the manifest names."""
        if not manifest.raw_file:
            raise self.damaged("the manifest names no downloaded file")
        return self.path(manifest.raw_file)

    def read_config(self) -> ArtifactConfig:
        """config.json as an ArtifactConfig; damage (unreadable, out-of-range values) names
        the field, the file and the repair command."""
        try:
            data = parse_json(self.read_bytes(CONFIG_FILE, MAX_JSON_BYTES), CONFIG_FILE)
            return ArtifactConfig.from_json(data, CONFIG_FILE)
        except FileNotFoundError:
            raise self.damaged(f"{CONFIG_FILE} is missing") from None
        except BadInputError as err:
            raise self.damaged(str(err)) from None

    def read_log(self, manifest: Manifest) -> tuple[bytes, str]:
        """(the training log's bytes, its path for messages); BadInputError when there is none."""
        if not manifest.log_file:
            raise BadInputError(f"{self.name} has no published training log")
        try:
            return self.read_bytes(manifest.log_file, MAX_LOG_BYTES), str(self.folder / manifest.log_file)
        except FileNotFoundError:
            raise self.damaged(f"{manifest.log_file} is missing") from None

    # ------------------------------------------------------------------ the manifest

    def manifest(self) -> Optional[Manifest]:
        """The typed manifest; None when there is none (not cached, or an unfinished pull).

        Raises:
            DamagedEntryError: the folder or manifest is a link or not a regular file, not
                JSON, too large, or names a file outside the entry (the reason is given).
            BadInputError: the manifest cannot be read for lack of permission (a cache
                written by another user without a shared umask).
        """
        data = read_manifest(self.name)
        if data is None:
            return None
        try:
            return Manifest.from_json(data, self.name)
        except ManifestError as err:
            raise self.damaged(f"{MANIFEST}: {err}", force=False) from None

    def complete_manifest(self, only: Optional[tuple[str, ...]] = None) -> Optional[Manifest]:
        """The manifest of a complete, undamaged entry; None when absent or unfinished.

        Raises:
            DamagedEntryError: the manifest is unreadable or a file it lists (of ``only``,
                when given) is missing, has the wrong size or is not a regular file.
        """
        manifest = self.manifest()
        if manifest is None or not manifest.complete:
            return None
        problems = self.problems(manifest, only=only)
        if problems:
            raise self.damaged("; ".join(problems), force=False)
        return manifest

    def state(self) -> tuple[str, Optional[Manifest], str]:
        """(CACHED | NOT_CACHED | DAMAGED, manifest or None, the damage in words); a
        config.json a load would refuse (a value out of range) is damage too."""
        try:
            manifest = self.complete_manifest()
            if manifest is not None:
                self.read_config()
        except DamagedEntryError as err:
            return DAMAGED, None, str(err)
        return (CACHED if manifest else NOT_CACHED), manifest, ""

    def problems(self, manifest: Manifest, *, full: bool = False,
                 only: Optional[tuple[str, ...]] = None) -> list[str]:
        """What is wrong with the recorded files: missing, not a regular file inside the
        entry, wrong size, or (``full``) wrong sha256; ``only`` limits the check to those."""
        found = []
        for rel, rec in manifest.with_required().items():
            if only is None or rel in only:
                problem = self.file_problem(rel, rec, full=full)
                if problem:
                    found.append(problem)
        return found

    def file_problem(self, rel: str, rec: FileRecord, *, full: bool) -> Optional[str]:
        """What is wrong with one recorded file, or None. The hash is read only when the size
        is right, through the confined handle (never a FIFO, device or a link out)."""
        try:
            with open_confined(self.folder, rel) as handle:
                size = os.fstat(handle.fileno()).st_size
                if rec.size is not None and size != rec.size:
                    return f"{rel} has {size} bytes, the manifest records {rec.size}"
                if full and rec.sha256 and sha256_handle(handle) != rec.sha256:
                    return f"{rel} does not match its recorded sha256 (corrupted or modified)"
        except FileNotFoundError:
            return f"{rel} is missing"
        except BadInputError as err:
            return str(err)
        return None

    def verify(self) -> list[str]:
        """Re-hash every recorded file under the shared use lock; each problem is one line
        naming the artifact, the file and the repair command (empty: intact)."""
        with use_lock(self.name):
            try:
                manifest = self.manifest()
            except DamagedEntryError as err:
                return [str(err)]
            if manifest is None or not manifest.complete:
                return [f"{self.name}: not cached (or the pull did not finish); run: segnext-hub pull {self.name}"]
            # The repair a load would name: a wrong size is repaired by a plain pull (it keeps an
            # intact download); only content that changed at the same size needs --force.
            quick = self.problems(manifest)
            if quick:
                return [str(self.damaged(problem, force=False)) for problem in quick]
            return [str(self.damaged(problem)) for problem in self.problems(manifest, full=True)]
