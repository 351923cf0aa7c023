"""Pull published artifacts into the cache: download, check hashes, convert, record.

A cache folder holds, per artifact name::

    <cache>/<name>/raw/<filename>       the published file, byte for byte
    <cache>/<name>/model.safetensors    MMSeg-named weights, verified against the raw file
    <cache>/<name>/config.json          what ``load`` needs to build the model, with the
                                        artifact's record (MD_R, training seed) and sources
    <cache>/<name>/<log file>           the training log, where one is published
    <cache>/<name>/manifest.json        hashes, hash status, conversion report

The manifest is written last, so a folder without one is an unfinished pull and is
never trusted; a second pull of a complete folder touches no network -- nor torch:
the converter is imported only when something is downloaded. The manifest records the size
and sha256 of every file it lists: sizes are re-checked on every use (a stat each), hashes
by ``verify``; a damaged entry is reported with the command that repairs it, and ``pull``
repairs it (keeping a downloaded file that is still intact).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .._version import __version__
from ..conversion.log_header import record_from_log  # pure Python: no torch
from ..conversion.record import Record
from ..errors import BadInputError, DownloadError, OfflineError, SegnextHubError
from ..fileio import sha256_file
from ..models.variants import get_variant  # pure data: no torch
from .cache import (
    MANIFEST,
    DamagedEntryError,
    artifact_dir,
    artifact_lock,
    checked_root,
    damaged,
    is_offline,
    offline_variable,
    read_manifest,
    use_lock,
    write_manifest,
)
from .config import CONFIG_FILE, MODEL_FILE, with_registry, write_config
from .netlimits import max_download_bytes
from .registry import Artifact, get_artifact

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2  # 2: 'files' records size + sha256 of every file
LOG_MAX_BYTES = 64 << 20  # a published training log is a few MB; it is read whole


@dataclass
class PullResult:
    name: str
    path: Path
    downloaded: bool
    manifest: dict[str, Any]
    warnings: list[str]


def file_records(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Relative path -> {"size", "sha256"} for every file the manifest vouches for.

    Version-1 manifests (before sizes were recorded) yield the two hashes they kept, with
    no size; their config.json and log are not covered until the next pull.
    """
    files = manifest.get("files")
    if isinstance(files, dict):
        return {rel: rec for rel, rec in files.items() if isinstance(rec, dict)}
    legacy = {}
    for rel_key, sha_key in (("raw_file", "raw_sha256"), ("model_file", "model_sha256")):
        if manifest.get(rel_key):
            legacy[manifest[rel_key]] = {"size": manifest.get("raw_size") if rel_key == "raw_file" else None,
                                         "sha256": manifest.get(sha_key)}
    return legacy


def record_files(folder: Path, known: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Size + sha256 for each relative path; ``known`` supplies hashes computed while writing."""
    records = {}
    for rel, digest in known.items():
        path = folder / rel
        records[rel] = {"size": path.stat().st_size, "sha256": digest or sha256_file(path)}
    return records


def entry_problems(name: str, manifest: dict[str, Any], *, full: bool = False,
                   only: Optional[tuple[str, ...]] = None) -> list[str]:
    """What is wrong with a cached entry's files: missing, wrong size, or (``full``) wrong
    sha256. ``only`` restricts the check to those relative paths (what a load reads)."""
    folder = artifact_dir(name)
    records = file_records(manifest)
    for required in (MODEL_FILE, CONFIG_FILE):
        records.setdefault(required, {"size": None, "sha256": None})
    checked = (_file_problem(folder, rel, rec, full=full) for rel, rec in records.items()
               if only is None or rel in only)
    return [problem for problem in checked if problem]


def _file_problem(folder: Path, rel: str, rec: dict[str, Any], *, full: bool) -> Optional[str]:
    """What is wrong with one recorded file (missing, wrong size, or with ``full`` a wrong
    sha256; the hash only when the size is right), or None."""
    path = folder / rel
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{rel} is missing"
    except OSError as err:
        return f"{rel} cannot be read ({err.strerror})"
    if rec.get("size") is not None and size != rec["size"]:
        return f"{rel} has {size} bytes, the manifest records {rec['size']}"
    if full and rec.get("sha256") and sha256_file(path) != rec["sha256"]:
        return f"{rel} does not match its recorded sha256 (corrupted or modified)"
    return None


def cached_manifest(name: str, only: Optional[tuple[str, ...]] = None) -> Optional[dict[str, Any]]:
    """The manifest of a complete, undamaged pull; None when absent or unfinished.

    Raises :class:`DamagedEntryError` (naming the file and the repair command) when the
    manifest is unreadable or a file it lists (of ``only``, when given) is missing or has
    the wrong size.
    """
    manifest = read_manifest(name)
    if not manifest or manifest.get("complete") is not True:
        return None
    problems = entry_problems(name, manifest, only=only)
    if problems:
        raise damaged(name, "; ".join(problems))
    return manifest


def cache_state(name: str) -> tuple[str, Optional[dict[str, Any]], str]:
    """("cached" | "not cached" | "damaged", manifest or None, problem) for list/info."""
    try:
        manifest = cached_manifest(name)
    except DamagedEntryError as err:
        return "damaged", None, str(err)
    return ("cached" if manifest else "not cached"), manifest, ""


def _prepare_repair(name: str, folder: Path) -> None:
    """Before (re-)pulling: invalidate the entry and delete every recorded file that no
    longer matches its size or sha256. An intact download stays, so a repair converts again
    without network; files without a record are rewritten by the pull anyway."""
    try:
        manifest = read_manifest(name) or {}
    except DamagedEntryError:
        manifest = {}
    (folder / MANIFEST).unlink(missing_ok=True)
    for rel, rec in file_records(manifest).items():
        if (folder / rel).is_file() and _file_problem(folder, rel, rec, full=True):
            (folder / rel).unlink()


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


def pull(name: str, *, strict: bool = False, progress: Optional[bool] = None, force: bool = False) -> PullResult:
    """Make ``name`` available in the cache and return its folder.

    Downloads (resuming a partial file), checks the hash, converts with verification and
    writes the manifest last, so a folder with a manifest is complete. A cached, undamaged
    name touches no network; a damaged one is repaired.

    Args:
        name: A registry name or alias (``mscan-t``, ``SegNeXt_Tiny``...).
        strict: Make a file-name hash-prefix mismatch fatal (by default a warning: MMSeg's
            publishing tool hashed files before stripping the optimizer).
        progress: Show a download bar; None shows one on a terminal only.
        force: Download again (offline: convert the kept download again), for damage only
            hashes reveal.

    Returns:
        A ``PullResult``: the folder, whether anything was downloaded, the manifest.

    Raises:
        BadInputError: Unknown name, or a file that is not the checkpoint the registry
            describes (it is then deleted).
        OfflineError: Offline and not cached.
        DownloadError: The network failed, or a hash mismatch that policy makes fatal.
        VerificationError: The converted weights do not compute what the published ones do.
    """
    art = get_artifact(name)
    if not force and (manifest := _usable(art.name)) is not None:
        return PullResult(art.name, artifact_dir(art.name), False, manifest, [])
    _refuse_offline(art)
    with artifact_lock(art.name) as folder:
        if not force and (manifest := _usable(art.name)) is not None:
            return PullResult(art.name, folder, False, manifest, [])  # another process finished it
        first = not any(folder.iterdir())
        try:
            with use_lock(art.name, shared=False):  # no load reads the files while they change
                if force and not is_offline():  # offline, --force converts the kept download again
                    (folder / "raw" / art.filename).unlink(missing_ok=True)  # before repair would hash it
                _prepare_repair(art.name, folder)
            _refuse_offline(art)
            return _pull_locked(art, folder, strict=strict, progress=progress)
        except BaseException:
            if first:
                _discard_if_empty(folder)
            raise


def _discard_if_empty(folder: Path) -> None:
    """After a failed first pull: remove the folder when it holds nothing worth keeping
    (empty folders, the download's lock files, which only pulls holding the artifact lock,
    as we do, ever open, and a partial download without a byte). A partial download with
    bytes stays, so the next pull resumes it."""
    def worthless(path: Path) -> bool:
        if path.is_symlink() or not path.is_file():
            return False
        if path.name.endswith(".partial.meta"):
            path = path.with_name(path.name[: -len(".meta")])
            return not path.exists() or worthless(path)
        return path.name.endswith((".lock", ".partial")) and path.stat().st_size == 0

    for sub in (folder / "raw", folder):
        if not sub.is_dir() or sub.is_symlink():
            continue
        entries = list(sub.iterdir())
        if all(worthless(p) for p in entries):
            for path in entries:
                path.unlink(missing_ok=True)
            try:
                sub.rmdir()
            except OSError:
                return


def _refuse_offline(art: Artifact) -> None:
    """Offline, a pull can only (re)convert a download that is already there."""
    if is_offline() and not (artifact_dir(art.name) / "raw" / art.filename).is_file():
        raise OfflineError(f"{art.name} is not cached and {offline_variable()} is set; "
                           "pull it once while online")


def _usable(name: str) -> Optional[dict[str, Any]]:
    """The manifest when the entry is complete and undamaged; None means "pull it" (a
    damaged entry is repaired by the pull, not reported)."""
    try:
        return cached_manifest(name)
    except DamagedEntryError:
        return None


def _pull_locked(art: Artifact, folder: Path, *, strict: bool, progress: Optional[bool]) -> PullResult:
    # Conversion needs torch and downloading needs requests; both are imported here so that
    # a cached pull, list, info, path and verify (which all import this module) are kept
    # out of them and answer at once.
    from ..conversion.converter import artifact_record, convert_checkpoint, write_output
    from ..conversion.reading import read_checkpoint
    from .download import download

    started = time.time()
    raw = folder / "raw" / art.filename
    raw.parent.mkdir(parents=True, exist_ok=True)
    result = download(art.url, raw, expected_sha256=art.sha256, expected_size=art.size, progress=progress,
                      desc=art.name)
    warnings: list[str] = []
    log_file = None
    try:
        hash_status, warning = _check_hash(art, result.sha256, strict)
        checkpoint = read_checkpoint(raw)
        # The log comes before the conversion: its config text is the second witness of MD_R.
        log_file, log_error = _fetch_log(art, folder, progress)
        log_record, log_error = _log_record(folder, log_file, log_error)
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
        if log_file:
            (folder / log_file).unlink(missing_ok=True)
        raise type(err)(f"{art.name}: downloaded file rejected and deleted: {err}") from None
    disagreements = [f"{art.name}: sources disagree: {line}" for line in conversion.report.disagreements]
    for message in ([warning] if warning else []) + disagreements:
        warnings.append(message)
        logger.warning("%s", message)  # the CLI escapes control characters when it shows it
    model_sha = write_output(conversion, folder / MODEL_FILE, force=True)
    write_config(folder, with_registry(conversion.artifact_config(art.name), art))
    files = record_files(folder, {f"raw/{art.filename}": result.sha256, MODEL_FILE: model_sha, CONFIG_FILE: "",
                                  **({log_file: ""} if log_file else {})})
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "complete": True,
        "name": art.name,
        "url": art.url,
        "raw_file": f"raw/{art.filename}",
        "raw_sha256": result.sha256,
        "raw_size": result.size,
        "hash_prefix": art.hash_prefix,
        "pinned_sha256": art.sha256,
        "hash_status": hash_status,
        "warnings": warnings,
        "model_file": MODEL_FILE,
        "model_sha256": model_sha,
        "log_file": log_file,
        "log_error": log_error,
        "record": conversion.report.record,
        "record_disagreements": disagreements,
        "files": files,
        "conversion": conversion.report.to_dict(),
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "segnext_hub_version": __version__,
    }
    write_manifest(art.name, manifest)
    return PullResult(art.name, folder, True, manifest, warnings)


def _fetch_log(art: Artifact, folder: Path, progress: Optional[bool]) -> tuple[Optional[str], Optional[str]]:
    """The training log is a convenience: failing to get it never fails the pull."""
    from .download import download  # kept out of the fast commands, like in _pull_locked

    if not art.log_url:
        return None, None
    name = art.log_url.rstrip("/").rsplit("/", 1)[-1] or "train.log.json"
    try:
        download(art.log_url, folder / name, max_bytes=min(LOG_MAX_BYTES, max_download_bytes()), progress=progress,
                 desc=f"{art.name} log")
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


def _log_record(folder: Path, log_file: Optional[str],
                log_error: Optional[str]) -> tuple[Optional[Record], Optional[str]]:
    """The downloaded log's record; an unreadable log is noted, never fatal."""
    if not log_file:
        return None, log_error
    try:
        return record_from_log(folder / log_file), log_error
    except (SegnextHubError, OSError, ValueError) as err:
        return None, f"training log not readable: {err}"


def verify_cached(name: str) -> list[str]:
    """Re-hash every file the manifest lists; returns the problems, each one line naming
    the artifact, the file and the repair command (empty: intact). Holds the shared use
    lock, so a concurrent ``rm`` waits instead of showing up as missing files."""
    with use_lock(name):
        try:
            manifest = read_manifest(name)
        except DamagedEntryError as err:
            return [str(err)]
        if not manifest or manifest.get("complete") is not True:
            return [f"{name}: not cached (or the pull did not finish); run: segnext-hub pull {name}"]
        # The repair a load would name: a wrong size is repaired by a plain pull (it keeps an
        # intact download); only content that changed at the same size needs --force.
        quick = entry_problems(name, manifest)
        if quick:
            return [str(damaged(name, problem)) for problem in quick]
        return [str(damaged(name, problem, force=True)) for problem in entry_problems(name, manifest, full=True)]


def cached_names() -> list[str]:
    """Names with a manifest in the cache (complete or damaged; a folder without one is an
    unfinished pull). Hidden folders (locks, an ``rm`` in progress) are not artifacts."""
    root = checked_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and (p / MANIFEST).is_file())
