"""Where downloaded and converted artifacts live on disk, and what we know about them.

Layout: ``cache_root()/<artifact name>/`` holds one artifact's files (the downloaded
checkpoint, its log, the converted ``model.safetensors`` + ``config.json``) and a
``manifest.json`` describing them. A folder without a manifest is an unfinished pull.

Every environment variable is read at call time, so tests and long-lived processes can
change them without re-importing the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import filelock

from ..errors import BadInputError, DamagedEntryError
from ..fileio import MAX_JSON_BYTES, atomic_writer, file_mode, make_dirs, read_confined

try:  # POSIX: shared (reader) locks; elsewhere readers take the exclusive lock (see use_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
LOCKS = ".locks"  # <root>/.locks/<name>.pull.lock and <name>.use.lock: never moved or deleted
_TRUTHY = {"1", "true", "yes", "on"}
# Registry names are short slugs; anything else could escape the cache or clash with
# the hidden ".trash-*" folders that remove_artifact uses.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,199}")


def _env_path(var: str) -> Optional[Path]:
    """An empty variable counts as unset, as for the Hugging Face ones (see hf_paths)."""
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


@dataclass(frozen=True)
class HfPaths:
    """The Hugging Face folders, resolved now from the environment."""

    home: Path
    hub_cache: Path
    assets_cache: Path


def hf_paths() -> HfPaths:
    """Where huggingface_hub keeps its files, by the chains its documentation gives.

    ``HF_HOME`` (else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``);
    ``HF_HUB_CACHE`` (else the legacy ``HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``);
    ``HF_ASSETS_CACHE`` (else ``HUGGINGFACE_ASSETS_CACHE``, else ``$HF_HOME/assets``); ``~``
    and ``$VAR`` expanded. Read at every call, unlike ``huggingface_hub.constants``, which
    freezes the environment when first imported (a long-lived process or a test would miss
    later changes). One deliberate difference: an empty variable counts as unset, as for
    ``SEGNEXT_HUB_CACHE``, instead of naming a relative folder in the current directory.
    ``tests/hub/test_cache.py`` compares these chains with the installed huggingface_hub.
    """
    def var(name: str) -> Optional[str]:
        value = os.environ.get(name, "")
        return value if value.strip() else None

    def expand(path: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(path)))

    xdg = var("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = str(expand(var("HF_HOME") or os.path.join(xdg, "huggingface")))
    return HfPaths(
        home=Path(home),
        hub_cache=expand(var("HF_HUB_CACHE") or var("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")),
        assets_cache=expand(var("HF_ASSETS_CACHE") or var("HUGGINGFACE_ASSETS_CACHE") or os.path.join(home, "assets")))


def hf_assets_cache() -> Path:
    """The Hugging Face assets cache (see :func:`hf_paths`)."""
    return hf_paths().assets_cache


def cache_root() -> Path:
    """``$SEGNEXT_HUB_CACHE``, else ``<HF assets cache>/segnext_hub``, so that people who
    already moved their Hugging Face cache to a big disk get ours moved with it.

    Not ``huggingface_hub.cached_assets_path``: it always adds ``<namespace>/<subfolder>``
    levels (moving every existing cache), resolves symlinks and creates the folder, while
    looking up an artifact here must never write.
    """
    return _env_path("SEGNEXT_HUB_CACHE") or hf_assets_cache() / "segnext_hub"


def checked_root() -> Path:
    """The cache root, refusing a path that exists but is not a folder (one line, not
    NotADirectoryError from deep inside a pull)."""
    root = cache_root()
    if root.exists() and not root.is_dir():
        raise BadInputError(f"the cache path {root} is a file, not a folder; point SEGNEXT_HUB_CACHE "
                            "at a folder (or remove the file)")
    return root


def validate_name(name: str) -> str:
    """Reject names that could point outside the cache (``..``, separators, NUL)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise BadInputError(
            f"invalid artifact name {name!r}: use letters, digits and . _ + = @ - "
            "(no path separators, no '..')"
        )
    return name


def artifact_dir(name: str) -> Path:
    """The folder for one artifact; not created here, so that lookups never write."""
    return checked_root() / validate_name(name)


def is_offline() -> bool:
    """True when ``SEGNEXT_HUB_OFFLINE`` or ``HF_HUB_OFFLINE`` is truthy.

    ``HF_HUB_OFFLINE`` is honoured too because people who set it mean "no network at all".
    """
    return any(
        os.environ.get(var, "").strip().lower() in _TRUTHY
        for var in ("SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE")
    )


def offline_variable() -> Optional[str]:
    """Which variable switched offline mode on, for error messages that say how to undo it."""
    for var in ("SEGNEXT_HUB_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUTHY:
            return var
    return None


def manifest_path(name: str) -> Path:
    return artifact_dir(name) / MANIFEST


def damaged(name: str, problem: str, *, force: bool = False) -> DamagedEntryError:
    """The one wording for damage: artifact, problem, repair command."""
    command = f"segnext-hub pull {'--force ' if force else ''}{name}"
    return DamagedEntryError(f"{name}: the cached copy is damaged: {problem}; repair it with: {command}")


def read_manifest(name: str) -> Optional[dict]:
    """The artifact's manifest as JSON; None when there is none (not cached or an unfinished pull).

    Read as a regular file inside the entry (no link, FIFO or device; at most
    :data:`~segnext_hub.fileio.MAX_JSON_BYTES`). Manifests are only ever replaced
    atomically, so an unreadable one was damaged on disk or edited by hand:
    :class:`DamagedEntryError`, which ``pull`` repairs. :mod:`segnext_hub.hub.entry`
    types and checks what it says.
    """
    folder = artifact_dir(name)
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            raise damaged(name, "the entry folder is a symbolic link (an entry is a real folder)")
        data = read_confined(folder, MANIFEST, MAX_JSON_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except BadInputError as err:
        if "Permission denied" in str(err):
            raise BadInputError(f"cannot read {folder / MANIFEST}: permission denied (the cache was written by "
                                "another user without a shared umask; see README 'Cache layout')") from None
        raise damaged(name, str(err)) from None
    try:
        text = data.decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError:
        raise damaged(name, f"{MANIFEST} is not UTF-8 text") from None
    except RecursionError:
        raise damaged(name, f"{MANIFEST} is nested too deeply to be read") from None
    except json.JSONDecodeError as err:
        raise damaged(name, f"{MANIFEST} is not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(value, dict):
        raise damaged(name, f"{MANIFEST} does not hold a JSON object")
    return value


def write_manifest(name: str, data: dict, *, folder: Optional[Path] = None) -> None:
    """Replace the manifest atomically: readers see the old one or the new one, never half.

    The manifest is written last in a pull, so its presence means "everything listed is
    complete". ``folder`` (default: the entry's) is where a pull builds the new entry.
    """
    if not isinstance(data, dict):
        raise TypeError("manifest data must be a dict")
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    folder = make_dirs(folder if folder is not None else artifact_dir(name))
    with atomic_writer(folder / MANIFEST, force=True) as handle:
        handle.write(text.encode("utf-8"))


def remove_artifact(name: str) -> bool:
    """Delete an artifact's folder; False when there was nothing to delete.

    Waits for a pull in progress (:func:`artifact_lock`) and for every load reading the
    artifact (:func:`use_lock`, shared), then renames the folder to a hidden sibling under
    the exclusive use lock, so that a load sees either the whole artifact or none of it.
    The rename's trash (and any a killed ``rm`` left) is deleted after the locks are gone.
    """
    folder = artifact_dir(name)
    if not os.path.lexists(folder):
        return False
    trash = folder.with_name(f".trash-{name}-{uuid.uuid4().hex[:8]}")
    with artifact_lock(name, create=False), use_lock(name, shared=False):
        try:
            os.replace(folder, trash)
        except FileNotFoundError:  # another process removed it first
            return False
    for leftover in [trash, *folder.parent.glob(f".trash-{name}-*")]:
        if leftover.is_symlink():  # a link put in the entry's place: removed, never followed
            leftover.unlink(missing_ok=True)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    return True


def lock_path(name: str, kind: str) -> Path:
    """``<root>/.locks/<name>.<kind>.lock``: outside the artifact folder, so that removing
    or renaming the folder never moves a lock someone is waiting on."""
    return make_dirs(checked_root() / LOCKS) / f"{validate_name(name)}.{kind}.lock"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block, on every OS.

    ``filelock`` locks the open file (flock on POSIX, LockFileEx on Windows), so the OS
    releases it when a holder dies, even by SIGKILL: a crashed pull never blocks the next.
    The lock file is created with the umask's mode (given explicitly: older filelock
    versions chmod to 0644 otherwise), so a second user of a group-shared cache can lock it.
    """
    make_dirs(path.parent)
    lock = filelock.FileLock(str(path), mode=file_mode())
    with lock:
        yield


@contextlib.contextmanager
def use_lock(name: str, *, shared: bool = True) -> Iterator[None]:
    """Readers (loads, verify) share this lock; ``rm`` and the install step of a pull take it
    exclusively, so nothing is removed or replaced while a process reads it.

    POSIX: ``flock`` LOCK_SH / LOCK_EX on ``<root>/.locks/<name>.use.lock`` (a reader that
    may not write the lock file opens it read-only: flock needs no write access). Without
    fcntl (Windows) readers take the same exclusive ``filelock`` as writers: loads of one
    artifact then run one at a time, which is slower but just as safe.
    """
    path = lock_path(name, "use")
    if fcntl is None:  # pragma: no cover - Windows
        with file_lock(path):
            yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise BadInputError(f"cannot open the lock {path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def artifact_lock(name: str, *, create: bool = True) -> Iterator[Path]:
    """Serialise whole pulls of one artifact (download + convert + manifest) across
    processes; yields the artifact folder (created unless ``create`` is False)."""
    folder = artifact_dir(name)
    with file_lock(lock_path(name, "pull")):
        if create:
            make_dirs(folder)
        yield folder
