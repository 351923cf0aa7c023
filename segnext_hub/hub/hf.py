"""Hugging Face Hub, the read side: ``hf://org/repo[@revision]`` to a local snapshot folder.

A repo published by segnext-hub (see ``tasks.publish``) holds exactly what a cache
folder's loader needs (``model.safetensors`` with MMSeg names + ``config.json``, the
schema of ``hub.config``), so ``load("hf://org/repo")`` and ``load("mscan-t")`` build the
same model from the same bytes. The error translation here is shared with publishing.

Every environment variable (``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME``, offline
switches) is read at call time: ``huggingface_hub.constants`` freezes them at import, which
would make a long-lived process or a test ignore later changes.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator, Optional

from ..errors import BadInputError, DownloadError, OfflineError, SegnextHubError
from .cache import hf_paths, is_offline, offline_variable
from .config import CONFIG_FILE, MODEL_FILE, REPO_FILES, read_config

DEFAULT_ENDPOINT = "https://huggingface.co"
_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_TRUTHY = {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------- settings


def hub_endpoint(endpoint: Optional[str] = None) -> str:
    """The explicit endpoint, else ``$HF_ENDPOINT``, else huggingface.co (no trailing /)."""
    value = (endpoint or os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_ENDPOINT).rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise BadInputError(f"Hub endpoint must be an http(s) URL, got {value!r}")
    return value


def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloaded repos, by its own rules but read now (see
    ``cache.hf_paths``): ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``${XDG_CACHE_HOME:-~/.cache}/huggingface/hub``."""
    return hf_paths().hub_cache


def _offline_reason() -> Optional[str]:
    """Which switch turned the network off, ours or huggingface_hub's frozen one."""
    if is_offline():
        return offline_variable()
    try:
        from huggingface_hub import constants

        return "HF_HUB_OFFLINE (set when huggingface_hub was imported)" if constants.is_offline_mode() else None
    except (ImportError, AttributeError):
        return None


def parse_repo_spec(spec: str) -> tuple[str, Optional[str]]:
    """``org/name`` or ``org/name@revision`` -> (repo id, revision or None)."""
    text = spec.strip()
    if text.startswith("hf://"):
        text = text[len("hf://"):]
    repo_id, _, revision = text.partition("@")
    check_repo_id(repo_id)
    if "@" in text and not revision.strip():
        raise BadInputError(f"hf://{text}: empty revision after '@'")
    return repo_id, check_revision(revision.strip(), text) if revision.strip() else None


_REVISION_RE = re.compile(r"[A-Za-z0-9._/-]{1,255}")


def check_revision(revision: str, spec: str) -> str:
    """A branch, tag, ``refs/pr/N`` or commit hash, by git's ref rules (no ``..``, no empty
    or hidden path component, no ``.lock`` ending): huggingface_hub uses the revision as a
    folder name in its cache, so ``../../x`` must never reach it."""
    parts = revision.split("/")
    if (not _REVISION_RE.fullmatch(revision) or ".." in revision or revision.endswith(".lock")
            or any(not part or part.startswith(".") for part in parts)):
        raise BadInputError(f"hf://{spec}: invalid revision {revision!r}: expected a branch, tag or commit "
                            "(letters, digits, . _ - /; no '..', no empty or hidden path part)")
    return revision


def check_repo_id(repo_id: str) -> str:
    """Refuse anything but ``org/name`` before it reaches a URL."""
    if not isinstance(repo_id, str) or not _REPO_RE.fullmatch(repo_id) or ".." in repo_id:
        raise BadInputError(f"invalid Hub repo {repo_id!r}: expected ORG/NAME (letters, digits, . _ -)")
    return repo_id


# --------------------------------------------------------------------------- errors


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _server_message(err: BaseException) -> str:
    """The Hub's own explanation (X-Error-Message / JSON 'error'), else the first line."""
    server = getattr(err, "server_message", None)
    if server and str(server).strip():
        return str(server).strip().splitlines()[0]
    return _first_line(err)


def _is_network_error(err: BaseException) -> bool:
    """Connection failures from whichever HTTP client this huggingface_hub uses."""
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    module = type(err).__module__.split(".")[0]
    return module in ("httpx", "httpx2", "requests", "urllib3")


@contextlib.contextmanager
def _hub_errors(what: str, endpoint: str) -> Iterator[None]:
    """huggingface_hub's multi-line exceptions -> our one-line errors with a next step."""
    from huggingface_hub import errors as hf

    try:
        yield
    except SegnextHubError:
        raise
    except hf.OfflineModeIsEnabled:
        raise OfflineError(f"{what}: offline mode is on ({_offline_reason() or 'HF_HUB_OFFLINE'})") from None
    except hf.GatedRepoError as err:
        raise BadInputError(f"{what}: the repo is gated on {endpoint}; accept its terms and pass a token "
                            f"({_server_message(err)})") from None
    except hf.RepositoryNotFoundError:
        raise BadInputError(f"{what}: repository not found on {endpoint} (or it is private: set HF_TOKEN "
                            "or pass --token)") from None
    except hf.RevisionNotFoundError:
        raise BadInputError(f"{what}: no such revision on {endpoint}") from None
    except hf.RemoteEntryNotFoundError as err:
        raise BadInputError(f"{what}: file not found on {endpoint} ({_server_message(err)})") from None
    except hf.HfHubHTTPError as err:
        status = err.response.status_code if getattr(err, "response", None) is not None else None
        if status in (401, 403):
            raise BadInputError(f"{what}: {endpoint} refused the credentials (HTTP {status}: "
                                f"{_server_message(err)}); pass --token or set HF_TOKEN with write access") from None
        raise DownloadError(f"{what}: HTTP {status} from {endpoint}: {_server_message(err)}") from None
    except ValueError as err:
        if "metadata in README.md" in str(err):  # the Hub's card validation
            raise BadInputError(f"{what}: the Hub rejected the model card: "
                                f"{' '.join(str(err).split())}") from None
        raise
    except Exception as err:  # noqa: BLE001 - network errors come from several client libraries
        if _is_network_error(err):
            raise DownloadError(f"{what}: cannot reach {endpoint}: {_first_line(err)}") from None
        raise


# --------------------------------------------------------------------------- download


def download_repo(spec: str, *, endpoint: Optional[str] = None, token: Optional[str] = None) -> Path:
    """The local snapshot folder of ``org/name[@revision]`` (files are downloaded once and
    then served from the Hugging Face cache; offline, only the cache is used)."""
    from huggingface_hub import errors as hf
    from huggingface_hub import snapshot_download

    repo_id, revision = parse_repo_spec(spec)
    url = hub_endpoint(endpoint)
    cache = hf_hub_cache()
    offline = _offline_reason()
    where = f"hf://{spec.strip()}"
    try:
        with _hub_errors(where, url):
            folder = snapshot_download(repo_id, revision=revision, allow_patterns=list(REPO_FILES),
                                       endpoint=url, cache_dir=str(cache), token=token,
                                       local_files_only=offline is not None)
    except hf.LocalEntryNotFoundError as err:
        if offline is not None:
            raise OfflineError(f"{where} is not in the local Hugging Face cache ({cache}) and {offline} is "
                               "set; load it once while online") from None
        raise DownloadError(f"{where}: {url} could not be reached or refused the request, and the repo is not "
                            f"in the local Hugging Face cache ({cache}): {_cause_line(err)}") from None
    return _check_snapshot(Path(folder), where)


def _cause_line(err: BaseException) -> str:
    cause = err.__cause__ or err.__context__
    return _first_line(cause) if cause is not None else _first_line(err)


def _check_snapshot(folder: Path, where: str) -> Path:
    missing = [name for name in (MODEL_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise BadInputError(f"{where} has no {' or '.join(missing)}: not a segnext-hub export "
                            "(publish one with `segnext-hub push`)")
    try:
        read_config(folder / CONFIG_FILE)
    except BadInputError as err:  # name the repo, not the snapshot path inside the HF cache
        raise BadInputError(str(err).replace(str(folder / CONFIG_FILE), f"{where}: {CONFIG_FILE}")) from None
    return folder
