"""Atomic file writes and hashing: the one place that decides how bytes reach disk.

Files and folders are created the way every other tool creates them: mode 0o666 / 0o777
minus the umask (0644 under umask 022, 0664 under 002), so a cache on a team volume is
shared by setting a group-friendly umask, nothing else.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

from .errors import BadInputError

try:  # POSIX: a writer holds a lock on its temp file, so a dead writer's file is recognisable
    import fcntl
except ImportError:  # pragma: no cover - Windows: only the age rule applies
    fcntl = None  # type: ignore[assignment]

PathLike = Union[str, "os.PathLike[str]"]
CHUNK = 1 << 20
# A killed writer's temp file may be deleted once nobody holds its lock and it is this old
# (or its pid is dead on this machine): long enough for a writer on another host whose
# lock this filesystem cannot see to have written something since.
STALE_TEMP_SECONDS = 10 * 60
# Kept free beyond an expected size, so that a write that "just fits" does not fill the disk.
FREE_SPACE_MARGIN = 16 << 20
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 minus the umask."""
    return 0o666 & ~current_umask()


def storage_error(err: OSError, target: PathLike, action: str = "write") -> BadInputError:
    """One line naming the file the user asked for (never our hidden temp file)."""
    reason = err.strerror or type(err).__name__
    hint = ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free some space or choose another folder"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; check the folder's permissions (or choose another one)"
    return BadInputError(f"cannot {action} {target}: {reason}{hint}")


def require_free_space(folder: PathLike, needed: int, target: PathLike) -> None:
    """Fail before a long job when ``needed`` bytes (plus a margin) will not fit in ``folder``."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # not measurable (odd filesystems): the write itself will report
    if free < needed + FREE_SPACE_MARGIN:
        raise BadInputError(
            f"cannot write {target}: needs {needed / 2**20:.1f} MiB, only {free / 2**20:.1f} MiB free "
            f"in {folder}; free some space or choose another folder"
        )


def check_destination(path: PathLike, *, force: bool = False) -> Path:
    """Fail before any work when ``path`` cannot (or, without ``force``, must not) be written.

    A symlink counts as existing even when it dangles: replacing it is an overwrite.
    """
    target = Path(path)
    if target.is_dir():
        raise BadInputError(f"output path {target} is a directory")
    if os.path.lexists(target) and not force:
        kind = "a dangling symlink" if target.is_symlink() and not target.exists() else "it"
        raise BadInputError(f"{target} already exists{'' if kind == 'it' else ' as ' + kind} "
                            "(use --force to overwrite)")
    if not target.parent.is_dir():
        raise BadInputError(f"output directory {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write {target}: the folder {target.parent} is not writable")
    return target


_TEMP_RE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")


def temp_name(target: Path) -> Path:
    """``.<name>.<pid>-<random>.tmp`` beside ``target``: hidden, and recognisably ours."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or unknowable: assume alive
    return True


def _unlocked(path: Path) -> bool:
    """Whether no live writer holds ``path``'s lock (always True without fcntl)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clean_stale_temps(folder: Path, *, now: Optional[float] = None) -> list[Path]:
    """Delete the temp files killed writers left in ``folder``; returns what went.

    A temp file is stale when no process holds its lock and either its pid is dead on this
    machine or it has not changed for :data:`STALE_TEMP_SECONDS` (a writer elsewhere on a
    shared volume). Only names made by :func:`temp_name` are considered.
    """
    removed: list[Path] = []
    now = time.time() if now is None else now
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.endswith(".tmp")]
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.fullmatch(entry.name)
        if not match or int(match["pid"]) == os.getpid():
            continue
        path = Path(entry.path)
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if not _unlocked(path) or (_pid_alive(int(match["pid"])) and age < STALE_TEMP_SECONDS):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


_CLEANED: set = set()


def _clean_once(folder: Path) -> None:
    """Once per folder and process: a folder of 30 000 predictions must not be scanned per
    file, and whatever a dead writer left was there before this process started."""
    key = os.path.abspath(folder)
    if key not in _CLEANED:
        _CLEANED.add(key)
        clean_stale_temps(folder)


@contextlib.contextmanager
def atomic_writer(path: PathLike, *, force: bool = False, mode: str = "wb",
                  expected_size: Optional[int] = None) -> Iterator[IO]:
    """Write to a temp file beside ``path`` and rename it into place on success.

    On any exception the temp file is removed and an existing ``path`` is untouched.
    Without ``force`` an existing ``path`` is an error (checked before writing). With
    ``expected_size`` the free space is checked first. The file gets the umask's mode
    (``mkstemp`` would make it 0600 and unreadable for the rest of a team). Storage errors
    (disk full, read-only, permissions) become one line naming ``path``.
    """
    target = check_destination(path, force=force)
    _clean_once(target.parent)
    if expected_size is not None:
        require_free_space(target.parent, expected_size, target)
    tmp = temp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as err:
        raise storage_error(err, target) from None
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "a live writer owns this"
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in _STORAGE_ERRNOS:
            raise storage_error(err, target) from None
        raise


def atomic_write_bytes(path: PathLike, data: bytes, *, force: bool = False) -> None:
    with atomic_writer(path, force=force, expected_size=len(data)) as handle:
        handle.write(data)


def make_dirs(folder: PathLike) -> Path:
    """``mkdir -p`` with the umask's mode; a storage error is one line naming the folder."""
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInputError(f"cannot create folder {target}: a file of that name is in the way") from None
    except NotADirectoryError:
        raise BadInputError(f"cannot create folder {target}: part of that path is a file") from None
    except OSError as err:
        raise storage_error(err, target, "create folder") from None
    return target


def make_temp_dir(parent: PathLike, prefix: str) -> Path:
    """A fresh hidden folder in ``parent`` with the umask's mode (``mkdtemp`` makes it 0700)."""
    for _ in range(100):
        folder = Path(parent) / f"{prefix}{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise storage_error(err, Path(parent), "write in") from None
        return folder
    raise BadInputError(f"cannot create a temporary folder in {parent}")


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Below this size a helper thread costs more than the hashing it overlaps.
THREADED_HASH_MIN = 32 << 20


class StreamingSha256:
    """sha256 that can run on a helper thread, so hashing overlaps reading, parsing and writing.

    ``update`` only queues a view of the data (no copy); the caller keeps that memory alive
    and unchanged until ``hexdigest``. One worker keeps the chunks in order, and
    ``sha256.update`` releases the GIL, so this is real parallelism on two cores.
    """

    def __init__(self, background: bool) -> None:
        self._digest = hashlib.sha256()
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if background else None
        self._futures: list = []

    def update(self, chunk: Any) -> None:
        if self._pool is None:
            self._digest.update(chunk)
        else:
            self._futures.append(self._pool.submit(self._digest.update, chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def hexdigest(self) -> str:
        self.close()
        for future in self._futures:
            future.result()
        self._futures.clear()
        return self._digest.hexdigest()


#: config.json, manifests and other small JSON files segnext-hub reads: far below 1 MiB.
MAX_JSON_BYTES = 1 << 20
#: Training logs are a few MB (160k iterations of mmcv JSON lines: ~2 MB); a file over
#: this is not one and is not read whole.
MAX_LOG_BYTES = 64 << 20


def parse_json(text: Union[str, bytes], where: str) -> Any:
    """JSON from untrusted text; a nesting deep enough to exhaust the parser is bad input too.

    Raises:
        BadInputError: not valid JSON, or nested beyond what Python's parser can follow.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise BadInputError(f"{where} is nested too deeply to be read") from None
    except ValueError as err:
        raise BadInputError(f"{where} is not valid JSON ({str(err)[:80]})") from None


def read_bounded(path: PathLike, what: str, max_bytes: int, *, head: bool = False) -> bytes:
    """The bytes of a file someone else may have put there: a regular file only (a FIFO or
    a device would block or never end; ``O_NONBLOCK`` keeps the open itself from waiting),
    and at most ``max_bytes`` of it.

    Args:
        path: The file.
        what: What it is, for the message ("config file", "training log").
        max_bytes: The most that is read.
        head: Return the first ``max_bytes`` of a larger file instead of refusing it.

    Raises:
        BadInputError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise BadInputError(f"{what} {path} is not a regular file")
            data = handle.read(max_bytes if head else max_bytes + 1)
    except OSError as err:
        raise BadInputError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise BadInputError(f"{what} {path} is over {max_bytes} bytes; no {what} is that large")
    return data


def read_json_file(path: PathLike, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A small JSON file read whole (see :func:`read_bounded`), valid JSON.

    Raises:
        BadInputError: one line naming the file and what is wrong with it.
    """
    return parse_json(read_bounded(path, f"{what} file", max_bytes), str(path))


def open_confined(folder: PathLike, rel: str) -> IO[bytes]:
    """Open ``folder/rel`` for reading, refusing anything that is not a regular file inside
    ``folder``: no symbolic link at any step (the folder itself included), no FIFO, device
    or socket.

    ``rel`` must already be a plain relative name (``/``-separated, no ``..``). Each part is
    opened relative to the one before with ``O_NOFOLLOW`` (``dir_fd``), so a link swapped in
    between a check and the read cannot redirect it; ``O_NONBLOCK`` keeps a FIFO from
    blocking the open. Where the OS has no ``dir_fd`` (Windows) each part is checked with
    ``lstat`` first, which leaves a small race.

    Raises:
        FileNotFoundError: a part of the path does not exist (a missing file, not a refusal).
        BadInputError: a part is a symbolic link or not a folder, the file is not a regular
            file, or it cannot be opened (the message names ``rel``).
    """
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or os.path.isabs(rel):
        raise BadInputError(f"{rel!r} is not a plain name inside {folder}")
    nofollow, directory = getattr(os, "O_NOFOLLOW", 0), getattr(os, "O_DIRECTORY", 0)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
    try:
        if nofollow and os.open in os.supports_dir_fd:
            fd = os.open(folder, flags | directory | nofollow)
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                try:
                    nxt = os.open(part, flags | nofollow | (os.O_NONBLOCK if last else directory), dir_fd=fd)
                finally:
                    os.close(fd)
                fd = nxt
        else:  # pragma: no cover - Windows
            for i in range(len(parts) + 1):
                step = Path(folder, *parts[:i])
                if step.is_symlink():
                    raise OSError(errno.ELOOP, "a symbolic link", str(step))
            fd = os.open(Path(folder, *parts), flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
            raise BadInputError(f"{rel} is (or passes through) a symbolic link or a non-folder") from None
        raise BadInputError(f"{rel} cannot be read ({err.strerror or err})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BadInputError(f"{rel} is not a regular file")
    if os.O_NONBLOCK and hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_confined(folder: PathLike, rel: str, max_bytes: int) -> bytes:
    """The whole of ``folder/rel`` (see :func:`open_confined`), at most ``max_bytes``.

    Raises:
        FileNotFoundError: the file does not exist.
        BadInputError: refused by :func:`open_confined`, or larger than ``max_bytes``.
    """
    with open_confined(folder, rel) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadInputError(f"{rel} is over {max_bytes} bytes")
    return data


def sha256_handle(handle: IO[bytes]) -> str:
    """sha256 of an open file's remaining bytes."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()
