"""Shared helpers of the CLI: one-line user errors, bug reports and versions.

Nothing here imports torch: the root ``--help`` and the error printer must stay instant.

Errors (README, "CLI reference"): a mistake in what the user gave (:class:`UserError`, any
:class:`~moegs_bench.errors.UserInputError`, a plain :class:`~moegs_bench.errors.InputError`
raised while the input is being read) is one red line and exit code 2; an operating-system error
about a file is one line naming it; anything else is a bug in moegs-bench (or in an expert's
code): :func:`report_bug` prints a short message, writes the traceback to a log file (in the run
folder when there is one) and the exit code is 1. ``MOEGS_BENCH_DEBUG=1`` shows the traceback
instead.
"""

from __future__ import annotations

import errno
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import typer

from moegs_bench.errors import InputError

#: Exit code of every user mistake (the same as click's usage errors).
USER_ERROR_EXIT = 2
#: Exit code of a bug (an internal error) and of a system failure (a full disk).
INTERNAL_ERROR_EXIT = 1
#: OS errors that mean the user named a path that cannot be used (exit 2); others (a full disk,
#: an I/O error) exit with 1.
_USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT,
                   errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY}


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


@dataclass
class ErrorContext:
    """What a command knows about where it works, for its error messages: ``flags`` maps config
    keys to the flag that set them (an error about ``router.temperature`` set by
    ``--temperature`` names the flag), ``run_folder`` and ``cache`` are where a bug report goes."""

    flags: dict[str, str] = field(default_factory=dict)
    run_folder: Path | None = None
    cache: Path | None = None

    def message(self, exc: BaseException) -> str:
        key = getattr(exc, "key", None)
        flag = self.flags.get(key) if isinstance(key, str) else None
        if flag and flag != "--set":
            return f"{flag} ({key}): {exc.problem}"  # type: ignore[attr-defined]
        return str(exc)


@contextmanager
def user_errors(context: ErrorContext | None = None) -> Iterator[None]:
    """Turn :class:`UserError` and :class:`~moegs_bench.errors.InputError` (a user's input that
    failed a check) into one line and exit 2. An :class:`~moegs_bench.errors.InternalError` (a
    check on computed values, see :func:`moegs_bench.errors.computed_values`) and any other
    exception propagate: they are bugs (:func:`bug_reports`)."""
    try:
        yield
    except UserError as exc:
        fail(str(exc))
    except InputError as exc:
        fail((context or ErrorContext()).message(exc))


@contextmanager
def bug_reports(context: ErrorContext | None = None) -> Iterator[None]:
    """Report an exception that is not a user error (:func:`user_errors` inside handles those):
    an :class:`OSError` about a file as one line (exit 2 for a path that cannot be used, 1 for a
    full disk or an I/O error), anything else as a bug (:func:`report_bug`, exit 1)."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("click", "typer"):  # usage errors: the group prints them
            raise
        handle_unexpected(exc, context)


@contextmanager
def command_errors(context: ErrorContext | None = None) -> Iterator[None]:
    """:func:`user_errors` inside :func:`bug_reports`: what every command runs in."""
    with bug_reports(context), user_errors(context):
        yield


def handle_unexpected(exc: BaseException, context: ErrorContext | None = None) -> NoReturn:
    """Print ``exc`` (not a user error) as one line (an OS error) or as a bug report, and exit."""
    if os.environ.get("MOEGS_BENCH_DEBUG"):
        raise exc
    if isinstance(exc, OSError) and (exc.filename is not None or exc.errno is not None):
        where = f"{exc.filename}: " if exc.filename is not None else ""
        what = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what += ("; files are written whole or not at all, so the last checkpoint is intact: free some space "
                     "and rerun the same command to resume")
        print_error(f"{where}{what}")
        raise typer.Exit(USER_ERROR_EXIT if exc.errno in _USER_OS_ERRORS else INTERNAL_ERROR_EXIT)
    report_bug(exc, context)


def report_bug(exc: BaseException, context: ErrorContext | None = None) -> NoReturn:
    """A bug: a short message on stderr, the traceback in a log file, exit code 1."""
    log = write_bug_log(exc, context or ErrorContext())
    first = " ".join(str(exc).split()) or "(no message)"
    print_error(f"internal error (a bug in moegs-bench or in an expert's code, not in your input): "
                f"{type(exc).__name__}: {first}")
    from rich.console import Console

    where = f"the traceback is in {log}" if log else "the traceback could not be written to a log file"
    Console(stderr=True, highlight=False).print(f"{where}; please include it in a bug report.", soft_wrap=True,
                                                markup=False)
    raise typer.Exit(INTERNAL_ERROR_EXIT)


def bug_log_folders(context: ErrorContext) -> list[Path]:
    """Where a bug report may go, best first: the run folder (once it holds a ``run.json``: a
    folder that is not a run folder is never written into), ``<cache>/logs``, the temp folder."""
    from moegs_bench.data import default_cache_dir

    folders = []
    if context.run_folder is not None and (context.run_folder / "run.json").is_file():
        folders.append(context.run_folder)
    try:
        folders.append((context.cache if context.cache is not None else default_cache_dir()) / "logs")
    except Exception:  # noqa: BLE001 - no home folder: the temp folder below
        pass
    folders.append(Path(tempfile.gettempdir()) / "moegs-bench-logs")
    return folders


def write_bug_log(exc: BaseException, context: ErrorContext) -> Path | None:
    """Write the command line, versions and traceback of ``exc`` to ``error-<time>-<pid>.log``
    in the first folder of :func:`bug_log_folders` that takes it; its path, or None."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    text = (f"moegs-bench internal error, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n"
            f"command: {' '.join(sys.argv)}\n"
            f"versions: {versions()}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for folder in bug_log_folders(context):
        path = folder / f"error-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


#: A shortcut flag: (parameter, flag, config key, its value from the parameter's value). A
#: command lists its shortcuts in the order they are applied, before ``--set``.
Shortcut = tuple[str, str, str, Callable[[Any], Any]]


def check_folder_name(option: str, name: str) -> None:
    """A run name is one folder name inside ``--out``: no separator, not ``.`` or ``..``, not
    absolute (so the run folder can never be written outside ``--out``)."""
    seps = {"/", os.sep, os.altsep or "/"}
    if not name.strip() or name in (".", "..") or any(s in name for s in seps) or "\0" in name:
        raise UserError(f"{option}: expected a folder name (no path separators, not '.' or '..'), got {name!r}")


def check_writable(option: str, path: Path) -> None:
    """Before any work: ``path`` (a folder, existing or to be created) can be created and written.

    Tries it for real (the permission bits do not tell for root, a read-only mount or a quota): a
    temporary file is created in ``path`` or its nearest existing ancestor, and removed. Raises a
    :class:`UserError` naming ``option`` and the path otherwise.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # a dangling link (or a loop) where a folder should be
            raise UserError(f"{option} {path}: {probe} is a symbolic link that leads nowhere (a missing target or a loop)")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise UserError(f"{option} {path}: {what}, expected a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".moegs-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        where = "" if probe == path else f" (in {probe})"
        raise UserError(f"{option} {path}: cannot write there{where}: {e.strerror or e}") from None


def check_cache_writable(cache: Path | None) -> None:
    """:func:`check_writable` for the cache, named as the user set it (``--cache``, the variable
    ``MOEGS_BENCH_CACHE`` or the default folder)."""
    from moegs_bench.data import default_cache_dir

    if cache is not None:
        check_writable("--cache", cache)
    elif os.environ.get("MOEGS_BENCH_CACHE"):
        check_writable("MOEGS_BENCH_CACHE", default_cache_dir())
    else:
        check_writable("the cache (set --cache or MOEGS_BENCH_CACHE to use another)", default_cache_dir())


def parse_frames(text: str) -> tuple[int, int]:
    """``--frames START:END`` as ``(start, end)`` (the parsing of ``data info --frames``)."""
    from moegs_bench.cli._data import parse_frame_range

    start, end = parse_frame_range(text)  # type: ignore[misc]
    return start, end


def parse_camera_ids(option: str, text: str) -> tuple[int, ...]:
    """``"A,B"`` -> ``(A, B)``: camera ids, as ``data info`` lists them."""
    try:
        ids = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option}: expected camera ids separated by commas (e.g. 0,3), got {text!r}") from None
    if any(i < 0 for i in ids):
        raise UserError(f"{option}: camera ids are >= 0, got {text!r}")
    return ids


#: The shortcut flags every training command has (``train-expert`` and ``run``): profile, seed
#: and the scene. A command adds its own after these.
TRAINING_SHORTCUTS: tuple[Shortcut, ...] = (
    ("profile", "--profile", "profile", lambda v: v),
    ("seed", "--seed", "seed", lambda v: v),
    ("scene", "--scene", "scene.spec", lambda v: v),
    ("downscale", "--downscale", "scene.downscale", lambda v: v),
    ("frames", "--frames", "scene.frames", parse_frames),
    ("frame_stride", "--frame-stride", "scene.frame_stride", lambda v: v),
    ("test_cameras", "--test-cameras", "scene.test_cameras", lambda v: parse_camera_ids("--test-cameras", v)),
)


def assignments(shortcuts: Sequence[Shortcut], values: dict[str, Any], given: set[str], settings: Sequence[str],
                context: ErrorContext) -> list[Any]:
    """The flags given (in ``shortcuts`` order), then ``--set`` (in command-line order): the last
    assignment of a key wins. Records in ``context`` which flag set each key (error messages)."""
    from moegs_bench.app.config import Assignment, text_assignments

    out = []
    for param, flag, key, value in shortcuts:
        if param in given and values[param] is not None and values[param] is not False:
            out.append(Assignment(key, value(values[param]), flag))
    out.extend(text_assignments(settings))
    for a in out:
        context.flags[a.key] = a.origin
    return out


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


def lpips_name(metric_id: str) -> str:
    """``lpips_alex_v0.1`` -> ``alex v0.1`` (a record's ``metrics.lpips_metric``, for tables)."""
    return metric_id.removeprefix("lpips_").replace("_", " ")


def lpips_text(metrics: Any, *, named: bool = False) -> str:
    """A record's LPIPS for a table cell: ``0.0771``, with `` (alex v0.1)`` when ``named``, or ``n/a``."""
    if metrics.lpips is None:
        return "n/a"
    return f"{metrics.lpips:.4f}" + (f" ({lpips_name(metrics.lpips_metric)})" if named else "")
