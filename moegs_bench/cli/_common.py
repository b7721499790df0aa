"""Shared helpers of the CLI: one-line user errors and versions.

Nothing here imports torch: the root ``--help`` and the error printer must stay instant.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import NoReturn

import typer

#: Exit code of every user mistake (the same as click's usage errors).
USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake the user can fix (bad value, unwritable folder): printed as one line, exit 2."""


def print_error(message: str) -> None:
    """Print ``Error: message`` as one red line on stderr (no markup parsing, no wrapping)."""
    from rich.console import Console
    from rich.text import Text

    line = " ".join(str(message).split())  # one line, whatever the message held
    Console(stderr=True, highlight=False).print(
        Text.assemble(("Error:", "bold red"), (" " + line, "red")), soft_wrap=True
    )


def fail(message: str) -> NoReturn:
    """Print a user error and leave with exit code 2."""
    print_error(message)
    raise typer.Exit(USER_ERROR_EXIT)


def _is_input_error(exc: BaseException) -> bool:
    # ``moegs_bench._checks`` imports torch; look it up only if something already loaded it.
    checks = sys.modules.get("moegs_bench._checks")
    return checks is not None and isinstance(exc, checks.InputError)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`UserError` and ``moegs_bench._checks.InputError`` into one line and exit 2."""
    try:
        yield
    except UserError as exc:
        fail(str(exc))
    except Exception as exc:
        if _is_input_error(exc):
            fail(str(exc))
        raise


def dist_version(name: str) -> str | None:
    """Installed version of distribution ``name`` without importing it (``None`` if absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of moegs-bench, Python and the main libraries (``None`` = not installed)."""
    from moegs_bench import __version__

    out: dict[str, str | None] = {"moegs-bench": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")  # the imported module knows its local tag best
    out["torch"] = getattr(torch, "__version__", None) or dist_version("torch")
    for name in ("gsplat", "numpy", "typer"):
        out[name] = dist_version(name)
    return out


def facts_table(title: str, facts: dict[str, object]):
    """A two-column rich table (bold key, value) of ``facts``, for summaries of one thing."""
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts.items():
        table.add_row(key, str(value))
    return table
