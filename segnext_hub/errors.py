"""Exceptions that carry a one-line, user-facing message and the CLI exit code."""

from __future__ import annotations


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's text on one line (whitespace collapsed, at most ``limit`` characters)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SegnextHubError(Exception):
    """Base class: ``str(err)`` is one line a user can act on."""

    exit_code = 2


class BadInputError(SegnextHubError, ValueError):
    """The input (file, name, option) is wrong; nothing was written. Exit 2."""

    exit_code = 2


class UnsafePickleError(BadInputError):
    """A pickle asked for a callable outside the allowlist; nothing was executed."""


class VerificationError(SegnextHubError):
    """Converted weights do not compute the same function as the source. Exit 1."""

    exit_code = 1


class DownloadError(SegnextHubError):
    """The network failed in a way retries did not fix (or a 404). Exit 2."""

    exit_code = 2


class OfflineError(SegnextHubError):
    """Offline mode is on and the artifact is not cached. Exit 2."""

    exit_code = 2


class DamagedEntryError(SegnextHubError):
    """A cached artifact's files are not what its manifest records (or the manifest itself
    is unreadable). The message names the artifact, what is wrong and the command that
    repairs it. Exit 1, like any failed verification."""

    exit_code = 1


class ManifestError(BadInputError):
    """A cache manifest no pull wrote (a name outside the entry, a value of the wrong kind):
    the reason in words; the cache entry reports it as DAMAGED with the repair command."""


class RemovedWhileLoading(SegnextHubError):
    """``segnext-hub rm`` (or another process) removed the artifact between our pull and
    our read; the user decides whether to pull it again. Exit 2."""

    exit_code = 2
