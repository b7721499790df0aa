"""The state of a dataset on disk: which source files, their sizes and modification times.

A scene's decoded-image cache and the expert cache are keyed on it, so that a dataset replaced at
the same path (new images, another calibration, a re-extracted video) is never answered from
caches of the old one; results records carry it (``extra["dataset"]``) to say which state of the
data a number came from.

The state is read from file metadata only (``stat``: size and modification time in nanoseconds,
as make and rsync judge a file changed); no file is read, so it costs microseconds per file even
for multi-GB videos. A file that is touched without being changed counts as changed: caches are
rebuilt, never silently wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class DatasetState:
    """What a dataset's source files looked like when it was loaded."""

    files: int  # source files present
    bytes: int  # their total size
    newest: str  # ISO 8601 UTC modification time of the newest one
    digest: str  # sha256 over (path relative to the root, size, mtime_ns) of every source, present or not

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def short(self) -> str:
        """The first 12 hex digits of :attr:`digest` (folder names)."""
        return self.digest[:12]


def dataset_state(root: Path, sources: Iterable[Path]) -> DatasetState:
    """The :class:`DatasetState` of the files ``sources`` of the dataset at ``root``; with no
    sources, of every file under ``root`` (hidden files and folders excluded). A source that does
    not exist is part of the state as absent (an optional file that appears changes the state)."""
    root = Path(root)
    paths = sorted({Path(p) for p in sources}) or _all_files(root)
    h = hashlib.sha256()
    count = total = newest = 0
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:  # (other OS errors name the file: the CLI reports them in one line)
            h.update(f"{_relative(path, root)}\0absent\n".encode())
            continue
        h.update(f"{_relative(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        count, total, newest = count + 1, total + st.st_size, max(newest, st.st_mtime_ns)
    when = datetime.fromtimestamp(newest / 1e9, tz=timezone.utc).isoformat(timespec="seconds") if count else ""
    return DatasetState(files=count, bytes=total, newest=when, digest=h.hexdigest())


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _all_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder) / f for f in files if not f.startswith("."))
    return sorted(found)
