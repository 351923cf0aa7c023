"""Pull published artifacts into the cache: download, check hashes, convert, record.

A cache folder holds, per artifact name::

    <cache>/<name>/raw/<filename>       the published file, byte for byte
    <cache>/<name>/model.safetensors    MMSeg-named weights, verified against the raw file
    <cache>/<name>/config.json          what ``load`` needs to build the model, with the
                                        artifact's record (MD_R, training seed) and sources
    <cache>/<name>/<log file>           the training log, where one is published
    <cache>/<name>/manifest.json        hashes, hash status, conversion report

A pull builds the whole entry in a staging folder of its own beside it
(``<cache>/.staging-<name>-<uid>``, on the same filesystem, private to the user running
it), writes the manifest last, makes every file read-only, and only then swaps it in by
renaming (the old entry to a hidden trash folder, the staged one into place) under the
exclusive use lock, so no load sees a half-built entry. Any failure before the swap
leaves the old entry as it was, loadable; a partial download stays in the staging folder
and resumes on the next pull. A second pull of a complete entry touches no network -- nor
torch: the converter is imported only when something is downloaded. The manifest records
the size and sha256 of every file it lists: sizes are re-checked on every use (a stat
each), hashes by ``verify``; a damaged entry is reported with the command that repairs it,
and ``pull`` repairs it (reusing a downloaded file that is still intact).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .._version import __version__
from ..conversion.log_header import record_from_log  # pure Python: no torch
from ..conversion.record import Record
from ..errors import BadInputError, DownloadError, OfflineError, SegnextHubError
from ..fileio import MAX_LOG_BYTES, current_umask, make_dirs, sha256_file
from ..models.variants import get_variant  # pure data: no torch
from .cache import (
    DamagedEntryError,
    artifact_lock,
    checked_root,
    is_offline,
    offline_variable,
    use_lock,
    write_manifest,
)
from .config import CONFIG_FILE, MODEL_FILE, with_registry, write_config
from .entry import CacheEntry
from .manifest import MANIFEST_VERSION, FileRecord, Manifest, plain_name
from .netlimits import max_download_bytes
from .registry import Artifact, get_artifact

logger = logging.getLogger(__name__)

__all__ = ["MANIFEST_VERSION", "PullResult", "cache_state", "cached_manifest", "cached_names", "pull",
           "verify_cached"]


@dataclass
class PullResult:
    name: str
    path: Path
    downloaded: bool
    manifest: Manifest
    warnings: list[str]

    @property
    def entry(self) -> CacheEntry:
        """The cache entry, for its files (``entry.raw_path(manifest)``, ``entry.weights``)."""
        return CacheEntry(self.name)


def cached_manifest(name: str, only: Optional[tuple[str, ...]] = None) -> Optional[Manifest]:
    """The manifest of a complete, undamaged entry; None when absent or unfinished.

    Raises:
        DamagedEntryError: the manifest is unreadable or a file it lists (of ``only``, when
            given) is missing, has the wrong size or is not a regular file in the entry.
    """
    return CacheEntry(name).complete_manifest(only)


def cache_state(name: str) -> tuple[str, Optional[Manifest], str]:
    """("cached" | "not cached" | "damaged", manifest or None, problem) for list/info."""
    return CacheEntry(name).state()


def verify_cached(name: str) -> list[str]:
    """Re-hash every file the manifest lists; returns the problems, each one line naming
    the artifact, the file and the repair command (empty: intact)."""
    return CacheEntry(name).verify()


def cached_names() -> list[str]:
    """Names with a manifest in the cache (complete or damaged). Hidden folders (locks,
    staging, an ``rm`` in progress) are not artifacts."""
    root = checked_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and os.path.lexists(p / "manifest.json"))


def pull(name: str, *, strict: bool = False, progress: Optional[bool] = None, force: bool = False) -> PullResult:
    """Make ``name`` available in the cache and return its folder.

    Downloads (resuming a partial file), checks the hash, converts with verification and
    writes the manifest last, so an entry with a manifest is complete; a cached, undamaged
    name touches no network. A damaged entry is repaired, and ``force`` builds a new one
    even when it is intact; either way the new entry is built beside the old and swapped in
    only when complete, so a failure leaves the old one as it was (the error says so).

    Args:
        name: A registry name, alias or published file stem (``mscan-t``, ``SegNeXt_Tiny``...).
        strict: Make a file-name hash-prefix mismatch fatal (by default a warning: MMSeg's
            publishing tool hashed files before stripping the optimizer).
        progress: Show a download bar; None shows one on a terminal only.
        force: Build the entry again: download again (offline: convert the kept download
            again), for damage only hashes reveal.

    Returns:
        A ``PullResult``: the folder, whether anything was downloaded, the typed manifest.

    Raises:
        BadInputError: Unknown name, or a file that is not the checkpoint the registry
            describes (the download is then deleted).
        OfflineError: Offline, and no intact download is kept to convert.
        DownloadError: The network failed, or a hash mismatch that policy makes fatal.
        VerificationError: The converted weights do not compute what the published ones do.
    """
    art = get_artifact(name)
    entry = CacheEntry(art.name)
    if not force and (manifest := _usable(entry)) is not None:
        return PullResult(art.name, entry.folder, False, manifest, [])
    with artifact_lock(art.name, create=False):
        if not force and (manifest := _usable(entry)) is not None:
            return PullResult(art.name, entry.folder, False, manifest, [])  # another process finished it
        had_entry = entry.exists()
        stage = _stage(art)
        try:
            _keep_download(entry, art, stage, again=force and not is_offline())
            _refuse_offline(art, stage)
            result = _pull_into(art, stage, strict=strict, progress=progress)
        except SegnextHubError as err:
            _drop_stage_unless_resumable(stage, art)
            if had_entry:
                raise type(err)(f"{err}; the cached copy of {art.name} was left as it was") from None
            raise
        except BaseException:
            _drop_stage_unless_resumable(stage, art)
            raise
        _install(entry, stage)
        logger.info("%s: %s", art.name, "replaced the cached copy" if had_entry else "pulled into the cache")
        return result


def _usable(entry: CacheEntry) -> Optional[Manifest]:
    """The manifest when the entry is complete and undamaged; None means "pull it" (a
    damaged entry is repaired by the pull, not reported)."""
    try:
        return entry.complete_manifest()
    except DamagedEntryError:
        return None


def _refuse_offline(art: Artifact, stage: Path) -> None:
    """Offline, a pull can only (re)convert a download that is already there."""
    if is_offline() and not (stage / "raw" / art.filename).is_file():
        raise OfflineError(f"{art.name} is not cached and {offline_variable()} is set; "
                           "pull it once while online")


# --------------------------------------------------------------------------- staging


def _stage(art: Artifact) -> Path:
    """This user's staging folder for ``art``, holding nothing but a partial download.

    ``<cache>/.staging-<name>-<uid>``: in the cache root so the final rename stays on one
    filesystem, and 0700 while it is built, so no other user of a shared cache can plant a
    link or a FIFO in it; the modes a team shares are set just before the swap.
    """
    root = make_dirs(checked_root())
    user = os.getuid() if hasattr(os, "getuid") else "user"
    stage = root / f".staging-{art.name}-{user}"
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(stage)
        if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            _discard(stage)
    try:
        for folder in (stage, stage / "raw"):
            folder.mkdir(mode=0o700, exist_ok=True)  # in a setgid team folder it inherits the group
            os.chmod(folder, 0o700 | (os.lstat(folder).st_mode & stat.S_ISGID))
    except OSError as err:
        raise BadInputError(f"cannot prepare {stage}: {err.strerror or err}") from None
    keep = {f"raw/{art.filename}.partial", f"raw/{art.filename}.partial.meta"}
    for path in list(stage.rglob("*")):  # everything but a partial download starts afresh
        rel = path.relative_to(stage).as_posix()
        if rel != "raw" and (rel not in keep or path.is_symlink() or not path.is_file()):
            _discard(path)
    return stage


def _drop_stage_unless_resumable(stage: Path, art: Artifact) -> None:
    """After a failed pull: the staging folder goes unless it holds a partial download with
    bytes in it, which the next pull resumes (so a failure leaves the cache as it was)."""
    partial = stage / "raw" / f"{art.filename}.partial"
    try:
        if partial.is_file() and not partial.is_symlink() and partial.stat().st_size > 0:
            return
    except OSError:
        pass
    _discard(stage)


def _discard(path: Path) -> None:
    """Remove a file, link or folder (a link itself, never what it points to)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _keep_download(entry: CacheEntry, art: Artifact, stage: Path, *, again: bool) -> None:
    """Give the staging folder the entry's published download when it is still intact (its
    recorded size and sha256), so a repair converts again without network; ``again``
    (``--force`` online) downloads it anew instead."""
    if again:
        return
    try:
        manifest = entry.manifest()
    except DamagedEntryError:
        return
    rel = f"raw/{art.filename}"
    record = manifest.files.get(rel) if manifest else None
    if record is None or not record.sha256 or entry.file_problem(rel, record, full=True):
        return
    target = stage / rel
    try:
        os.link(entry.folder / rel, target)  # same filesystem: no copy (a file is never changed in place)
    except OSError:  # another user's file under protected_hardlinks, or no hard links here
        with entry.open(rel) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
    if sha256_file(target) != record.sha256:  # replaced between the check and the link
        target.unlink()


def _install(entry: CacheEntry, stage: Path) -> None:
    """Swap the staged entry in: team-readable modes, then two renames under the exclusive
    use lock (no load between them), then the old entry's trash is deleted."""
    _share_modes(stage)
    folder = entry.folder
    trash = folder.with_name(f".trash-{entry.name}-{uuid.uuid4().hex[:8]}")
    with use_lock(entry.name, shared=False):
        moved = False
        if os.path.lexists(folder):
            os.replace(folder, trash)  # a link in its place is moved, never followed
            moved = True
        try:
            os.replace(stage, folder)
        except OSError as err:
            if moved:
                os.replace(trash, folder)
            raise BadInputError(f"cannot install {folder}: {err.strerror or err}; the cached copy was left "
                                "as it was") from None
    _discard(trash)


def _share_modes(stage: Path) -> None:
    """Folders get the umask's mode (keeping a setgid group bit), files the umask's mode
    without any write bit: cache files are replaced by rename, never written in place."""
    umask = current_umask()
    for path in [stage, *stage.rglob("*")]:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            os.chmod(path, (0o777 & ~umask) | (info.st_mode & stat.S_ISGID))
        elif stat.S_ISREG(info.st_mode):
            os.chmod(path, 0o444 & ~umask)


# --------------------------------------------------------------------------- building an entry


def _pull_into(art: Artifact, stage: Path, *, strict: bool, progress: Optional[bool]) -> PullResult:
    # Conversion needs torch and downloading needs requests; both are imported here so that
    # a cached pull, list, info, path and verify (which all import this module) are kept
    # out of them and answer at once.
    from ..conversion.converter import artifact_record, convert_checkpoint, write_output
    from ..conversion.reading import read_checkpoint
    from .download import download

    started = time.time()
    raw = stage / "raw" / art.filename
    result = download(art.url, raw, expected_sha256=art.sha256, expected_size=art.size, progress=progress,
                      desc=art.name)
    warnings: list[str] = []
    try:
        hash_status, warning = _check_hash(art, result.sha256, strict)
        checkpoint = read_checkpoint(raw)
        # The log comes before the conversion: its config text is the second witness of MD_R.
        log_file, log_error = _fetch_log(art, stage, progress)
        log_record, log_error = _log_record(stage, log_file, log_error)
        own = artifact_record(checkpoint)
        conversion = convert_checkpoint(
            checkpoint, from_layout=art.layout, variant=art.variant, num_classes=art.num_classes,
            log=log_record, registry=registry_record(art, recorded=own.md_r is not None or (
                log_record is not None and log_record.md_r is not None)))
        if conversion.detection.kind != art.kind:
            raise BadInputError(f"{art.name}: expected a {art.kind} checkpoint, the file holds a "
                                f"{conversion.detection.kind}")
        width, wanted = conversion.detection.ham_channels, art.ham_channels or get_variant(art.variant).ham_channels
        if art.kind == "segmentor" and width != wanted:
            raise BadInputError(f"{art.name}: expected a decode head {wanted} wide, the file's is {width}")
    except SegnextHubError as err:
        raw.unlink(missing_ok=True)
        raise type(err)(f"{art.name}: downloaded file rejected and deleted: {err}") from None
    disagreements = [f"{art.name}: sources disagree: {line}" for line in conversion.report.disagreements]
    for message in ([warning] if warning else []) + disagreements:
        warnings.append(message)
        logger.warning("%s", message)  # the CLI escapes control characters when it shows it
    model_sha = write_output(conversion, stage / MODEL_FILE, force=True)
    write_config(stage, with_registry(conversion.artifact_config(art.name), art))
    known = {f"raw/{art.filename}": result.sha256, MODEL_FILE: model_sha, CONFIG_FILE: "",
             **({log_file: ""} if log_file else {})}
    manifest = Manifest(
        name=art.name, complete=True, url=art.url, raw_file=f"raw/{art.filename}", raw_sha256=result.sha256,
        raw_size=result.size, hash_prefix=art.hash_prefix, pinned_sha256=art.sha256, hash_status=hash_status,
        warnings=tuple(warnings), model_file=MODEL_FILE, model_sha256=model_sha, log_file=log_file,
        log_error=log_error, record=conversion.report.record, record_disagreements=tuple(disagreements),
        files={rel: FileRecord(os.path.getsize(stage / rel), digest or sha256_file(stage / rel))
               for rel, digest in known.items()},
        conversion=conversion.report.to_dict(),
        pulled_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), segnext_hub_version=__version__)
    write_manifest(art.name, manifest.to_json(), folder=stage)
    return PullResult(art.name, CacheEntry(art.name).folder, True, manifest, warnings)


def _check_hash(art: Artifact, measured: str, strict: bool) -> tuple[str, Optional[str]]:
    """Hash policy: a pinned sha256 is enforced by the download itself; a file-name
    prefix that does not match only warns (MMSeg's publishing tool hashed the file before
    stripping the optimizer), unless ``strict``."""
    if art.sha256:
        return "sha256 pinned, matched", None
    if not art.hash_prefix:
        return "no published hash; measured sha256 recorded", None
    if measured.startswith(art.hash_prefix):
        return "file-name prefix matched", None
    message = (f"{art.name}: sha256 {measured[:12]} does not start with the file name's "
               f"{art.hash_prefix}; MMSeg's publishing tool may have hashed it before stripping the optimizer")
    if strict:
        raise DownloadError(message + "; refusing with --strict")
    return "file-name prefix MISMATCH (warning)", message


def _fetch_log(art: Artifact, stage: Path, progress: Optional[bool]) -> tuple[Optional[str], Optional[str]]:
    """The training log is a convenience: failing to get it never fails the pull."""
    from .download import download  # kept out of the fast commands, like in _pull_into

    if not art.log_url:
        return None, None
    try:
        name = plain_name(art.log_url.rstrip("/").rsplit("/", 1)[-1] or "train.log.json", "the log's name")
        download(art.log_url, stage / name, max_bytes=min(MAX_LOG_BYTES, max_download_bytes()),
                 progress=progress, desc=f"{art.name} log")
    except SegnextHubError as err:
        return None, str(err)
    return name, None


def registry_record(art: Artifact, *, recorded: bool) -> Optional[Record]:
    """What the registry knows, the last witness. An unsettled MD_R (``md_r_settled:
    false``, MMSeg B/L) steps aside when the checkpoint or its log records one, so the
    artifact settles it without a warning; a settled one that disagrees is reported."""
    if art.md_r is None or (recorded and not art.md_r_settled):
        return None
    return Record.of(f"registry: {art.md_r_source}", md_r=art.md_r)


def _log_record(stage: Path, log_file: Optional[str],
                log_error: Optional[str]) -> tuple[Optional[Record], Optional[str]]:
    """The downloaded log's record; a log that cannot be read (unreadable, nested past any
    parser's depth, not a log) is noted in the manifest, never fatal."""
    if not log_file:
        return None, log_error
    try:
        return record_from_log(stage / log_file), log_error
    except (SegnextHubError, OSError, ValueError, RecursionError, MemoryError) as err:
        return None, f"training log not readable: {str(err)[:200] or type(err).__name__}"
