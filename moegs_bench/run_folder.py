"""Run folders: one ``run.json`` names the run a folder holds; another run's folder is refused.

A command works in its run folder through :func:`working_in`: it holds the folder's lock
(:mod:`moegs_bench.locks`) for the whole work, claims the folder (:func:`claim_folder`), removes
temporary files a killed process left (:func:`moegs_bench.io.remove_stale_temps`) and, when the
work is refused or fails before it wrote anything, leaves the folder as it found it (no
``run.json`` stub, no empty folder).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write, remove_stale_temps
from moegs_bench.locks import LOCK_FILE, folder_lock

RUN_FILE = "run.json"
#: The ``kind`` of a ``train-expert`` folder's ``run.json`` (folders written before kinds were
#: recorded are recognised by their ``expert`` key).
EXPERT_RUN = "moegs-bench/expert-run"
MIXTURE_RUN = "moegs-bench/mixture-run"
_KIND_NAMES = {EXPERT_RUN: "train-expert run", MIXTURE_RUN: "mixture run (moegs-bench run)"}


class RunFolderError(UserInputError):
    """The output folder holds another run, or a partial run that was not asked to resume."""


class _Unreadable:
    """A ``run.json`` that exists but cannot be parsed (see :func:`read_identity`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def read_identity(out_dir: Path) -> dict | None:
    """The ``run.json`` of ``out_dir`` (None when there is none)."""
    found = _read(out_dir)
    if isinstance(found, _Unreadable):
        raise RunFolderError(f"{out_dir / RUN_FILE}: unreadable ({found.reason}); choose another --out, or pass "
                             "--force to replace the run in it")
    return found


def _read(out_dir: Path) -> dict | _Unreadable | None:
    run_file = out_dir / RUN_FILE
    if not run_file.is_file():
        return None
    try:
        data = json.loads(run_file.read_text())
    except json.JSONDecodeError as e:
        return _Unreadable(f"not valid JSON: {e.msg} at line {e.lineno}")
    except UnicodeDecodeError:
        return _Unreadable("not UTF-8 text")
    if not isinstance(data, dict):
        return _Unreadable(f"expected a JSON object, got {type(data).__name__}")
    return data


def run_kind(identity: dict) -> str | None:
    """The kind of run an identity describes (:data:`EXPERT_RUN`, :data:`MIXTURE_RUN`, or None)."""
    kind = identity.get("kind")
    if kind is None and "expert" in identity:
        return EXPERT_RUN
    return kind if isinstance(kind, str) else None


def claim_folder(out_dir: Path, identity: dict, *, what: str, owned: Sequence[str], force: bool) -> None:
    """Make ``out_dir`` the folder of the run ``identity``: refuse a folder holding another run (or
    anything that is not a run of ours); ``force`` first deletes what a previous run of the same
    kind wrote (only the ``owned`` names) and takes the folder over. A folder of another kind (a
    mixture run for an expert training, and the reverse) is refused even with ``force``; an
    unreadable ``run.json`` is replaced with ``force``."""
    previous = _read(out_dir)
    if isinstance(previous, _Unreadable):
        if not force:
            read_identity(out_dir)  # raises, with the reason
        previous = {}
    if previous is not None:
        mine, theirs = run_kind(identity), run_kind(previous)
        if previous and theirs != mine:
            raise RunFolderError(f"{out_dir}: holds a {_KIND_NAMES.get(theirs or '', 'run of another kind')}, not a "
                                 f"{_KIND_NAMES.get(mine or '', what)}; --force only redoes a run of the same kind: "
                                 "choose another --out")
        if previous != identity and not force:
            diff = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
            raise RunFolderError(f"{out_dir}: holds a different run (differs in {', '.join(diff)}); choose "
                                 "another --out or pass --force to replace it")
        if force:
            for name in owned:
                path = out_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
    elif out_dir.exists() and _foreign(out_dir):
        raise RunFolderError(f"{out_dir}: exists and is not a moegs-bench {what} (no {RUN_FILE}); choose "
                             "another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    if previous != identity:  # a rerun leaves the folder untouched
        atomic_write(out_dir / RUN_FILE, lambda p: p.write_text(json.dumps(identity, indent=2) + "\n"))


def _foreign(out_dir: Path) -> list[str]:
    """What ``out_dir`` holds besides our lock file."""
    return [p.name for p in out_dir.iterdir() if p.name != LOCK_FILE]


@contextmanager
def working_in(out_dir: Path, identity: dict, *, what: str, owned: Sequence[str], force: bool, wait: bool = False,
               on_wait: Callable[[str], None] | None = None, check: Callable[[], None] | None = None,
               bookkeeping: Sequence[str] = ()) -> Iterator[None]:
    """Lock ``out_dir``, claim it for ``identity`` (:func:`claim_folder`; ``check`` runs between
    the two, under the lock) and remove stale temporary files, for the body of the ``with``.

    ``wait``: wait for another process working there (a shared cache entry) instead of refusing.
    A refusal (a :class:`~moegs_bench.errors.UserInputError`, in the claim or in the body before
    anything but ``run.json`` and the ``bookkeeping`` files was written) leaves the folder as it
    was: the ``run.json``, bookkeeping and lock file this call wrote and the folders it created are
    removed again. After a bug the folder stays (it holds the bug report)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"{out_dir}: is a file, not a folder; choose another --out")
    created = _missing_parents(out_dir)
    had_lock = (out_dir / LOCK_FILE).exists()
    try:
        with folder_lock(out_dir, wait=wait, what=what, on_wait=on_wait) as lock:
            before = _read(out_dir)
            try:
                if check is not None:
                    check()
                claim_folder(out_dir, identity, what=what, owned=owned, force=force)
                remove_stale_temps(out_dir)
                yield
            except UserInputError:
                stub = {RUN_FILE, *bookkeeping}
                if before != identity and set(_foreign(out_dir)) <= stub:
                    for name in stub:  # (a refusal leaves no stub)
                        (out_dir / name).unlink(missing_ok=True)
                lock.remove_on_release = not had_lock
                raise
    except UserInputError:
        _remove_if_empty(created)
        raise


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the folders of ``created`` (deepest first) while they are empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # not empty (another process works there now), or gone
            return
