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


class UnreachableError(DownloadError):
    """The host could not be reached at all (DNS failure, connection refused); not retried. Exit 2."""


# Cc (C0, DEL, C1), line/paragraph separators and the bidirectional overrides: characters
# that move the cursor, clear the screen or reorder what a terminal shows.
_UNPRINTABLE = {*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_ESCAPES = {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def printable(value: object) -> str:
    """``str(value)`` with control characters escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    Text read from files (a manifest, a training log, a checkpoint's meta) may be written
    by someone else: printed raw, an escape sequence could clear the screen or fake a line
    such as "hash status: sha256 pinned, matched". Everything the CLI shows from a file
    goes through this (see ``cli/common.py::shown``).
    """
    text = str(value)
    if not any(ord(ch) in _UNPRINTABLE for ch in text):
        return text
    return "".join(_ESCAPES.get(ord(ch), f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
                   if ord(ch) in _UNPRINTABLE else ch for ch in text)
