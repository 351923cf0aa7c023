"""What every command shares: one-line errors, exit codes, --debug tracebacks."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from typing import Any, Callable, TypeVar

import click

from ..errors import SegnextHubError, printable

F = TypeVar("F", bound=Callable[..., Any])

debug_option = click.option("--debug", is_flag=True, help="Show a full traceback on errors.")


class _StderrHandler(logging.Handler):
    """Library warnings as the CLI's own lines: ``warning: ...`` (or the record's
    ``cli_prefix``, e.g. ``note``) on the stderr of the moment (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = getattr(record, "cli_prefix", None) or record.levelname.lower()
            click.echo(f"{prefix}: {shown(record.getMessage())}", err=True)
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def show_library_warnings() -> None:
    """Route the package's WARNING records to stderr once per process (library code logs,
    never prints; the CLI decides how that looks)."""
    package = logging.getLogger("segnext_hub")
    if not any(isinstance(h, _StderrHandler) for h in package.handlers):
        handler = _StderrHandler(logging.WARNING)
        package.addHandler(handler)


def shown(value: Any) -> str:
    """``value`` as the CLI prints it: control characters escaped (``\\x1b``, ``\\n``).

    Every string that comes from a file (a manifest, config.json, a training log, a
    checkpoint's meta, an error message quoting them) goes through this before it reaches
    the terminal, so a group member who edits a shared cache cannot clear the screen or
    fake a line such as "hash status  sha256 pinned, matched".
    """
    return printable(value)


def shown_lines(text: str) -> str:
    """Multi-line text (a report, a table) with each line passed through :func:`shown`."""
    return "\n".join(shown(line) for line in str(text).splitlines())


def handle_errors(func: F) -> F:
    """Turn library errors into one line on stderr and the documented exit code.

    Exit codes: 0 success, 1 verification failed, 2 bad input, usage or network error.
    Unexpected exceptions also exit 2 with one line; ``--debug`` shows the traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.pop("debug", False)
        show_library_warnings()
        try:
            return func(*args, **kwargs)
        except SegnextHubError as err:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {shown(err)}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - the promise is: no traceback without --debug
            if debug:
                traceback.print_exc()
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            click.echo(f"error: {type(err).__name__}: {shown(message)} (rerun with --debug for details)", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def command_options(func: F) -> F:
    """``--debug`` plus error handling, for every command."""
    return debug_option(handle_errors(func))
