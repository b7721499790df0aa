"""Run folders: one ``run.json`` names the run a folder holds; another run's folder is refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write

RUN_FILE = "run.json"


class RunFolderError(UserInputError):
    """The output folder holds another run, or a partial run that was not asked to resume."""


def read_identity(out_dir: Path) -> dict | None:
    """The ``run.json`` of ``out_dir`` (None when there is none)."""
    run_file = out_dir / RUN_FILE
    if not run_file.is_file():
        return None
    try:
        return json.loads(run_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{run_file}: unreadable ({e}); choose another --out") from None


def claim_folder(out_dir: Path, identity: dict, *, what: str, owned: Sequence[str], force: bool) -> None:
    """Make ``out_dir`` the folder of the run ``identity``: refuse a folder holding another run (or
    anything that is not a run of ours); ``force`` first deletes what a previous run wrote (only
    the ``owned`` names) and takes the folder over."""
    previous = read_identity(out_dir)
    if previous is not None:
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
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise RunFolderError(f"{out_dir}: exists and is not a moegs-bench {what} (no {RUN_FILE}); choose "
                             "another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    if previous != identity:  # a rerun leaves the folder untouched
        atomic_write(out_dir / RUN_FILE, lambda p: p.write_text(json.dumps(identity, indent=2) + "\n"))
