"""The sweep folder: the frozen spec, the plan, code provenance and one folder per point.

::

    sweep.json               what this folder is (format, name, cache, launcher history)
    spec.yaml                the spec file as it was first run (a frozen copy)
    spec.json                the spec as resolved (with any --set); a rerun must resolve to the same
    plan.jsonl               one line per point: its id (hash of its resolved configuration) and configuration
    provenance.json          code provenance (moegs-bench version, git commit, packages) of each `sweep run`
    points/<id>/status.json  state, attempts, job id, host, times, exit code, the log's last lines
    points/<id>/log.txt      the point's output (each attempt appended)
    points/<id>/run/         a run point's run folder (prune/ and distill/ for those commands)
    baselines/               the fair baselines the distill points of one source run share
    slurm/                   submitit's job scripts, pickles and logs (slurm launcher)
    results/                 `sweep collect`: results.csv, results.parquet

Whether a point is finished is decided from its own files (its results record exists; for an
expert point, the expert cache entry it trained holds one), never from the scheduler. A point
is running while a process holds its folder's lock (:mod:`moegs_bench.locks`; the kernel drops it
when the process dies however it dies), so a point whose status says "running" but whose lock is
free was killed ("lost") and runs again.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write
from moegs_bench.locks import LOCK_FILE
from moegs_bench.sweep.plan import Point
from moegs_bench.sweep.spec import SweepSpec

__all__ = ["FORMAT", "POINT_STATES", "PointState", "SweepFolder", "SweepFolderError", "now"]

FORMAT = "moegs-bench/sweep"
VERSION = 1
#: A point's folder of results, by command (inside points/<id>/).
RESULT_FOLDER = {"run": "run", "prune": "prune", "distill": "distill"}
#: The file whose presence says a point is finished, inside its result folder.
FINISHED_FILE = {"run": "results/mixture.json", "prune": "results/mixture.json", "distill": "results.json"}
POINT_STATES = ("done", "running", "failed", "lost", "queued", "pending")
TAIL_LINES = 20


class SweepFolderError(UserInputError):
    """A folder that is not (or not this) sweep's."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PointState:
    point: Point
    state: str  # one of POINT_STATES
    status: dict[str, Any]  # status.json ({} before the first attempt)


class SweepFolder:
    """A sweep folder (module doc)."""

    def __init__(self, root: Path, plan: Sequence[Point] | None = None) -> None:
        self.root = Path(root)
        self._plan = list(plan) if plan is not None else None  # (a plan not written yet: --dry-run)

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create_or_check(cls, root: Path, spec: SweepSpec, plan: Sequence[Point], spec_text: str,
                        cache: Path) -> SweepFolder:
        """The folder of this spec: created (spec, plan) when new or empty; an existing folder must
        hold the same sweep (the same resolved spec, its name and resources aside), with the same
        expert cache: a folder of another spec or of something else is refused."""
        folder = cls(root)
        frozen = spec.to_dict()
        for key in ("resources", "name"):  # (neither changes a point: a rerun may give other resources)
            frozen.pop(key)
        if folder.meta_path.is_file():
            old = folder.read_spec()
            for key in ("resources", "name"):
                old.pop(key, None)
            if old != frozen:
                diff = sorted(k for k in set(old) | set(frozen) if old.get(k) != frozen.get(k))
                raise SweepFolderError(f"{root}: holds the sweep of another spec (it differs in {', '.join(diff)}); "
                                       "choose another --out, or remove that folder")
            meta = folder.meta()
            if meta.get("cache") != str(cache):
                raise SweepFolderError(f"{root}: was run with the expert cache {meta.get('cache')}, not {cache}; "
                                       "pass --cache with that folder (points of one sweep share one cache)")
        else:
            if folder.root.exists() and (not folder.root.is_dir() or any(folder.root.iterdir())):
                raise SweepFolderError(f"{root}: exists and is not a sweep folder (no sweep.json); choose another "
                                       "--out")
            folder.root.mkdir(parents=True, exist_ok=True)
            folder._write_text(folder.root / "spec.yaml", spec_text)
            folder._write_json(folder.root / "spec.json", spec.to_dict())
            folder._write_json(folder.meta_path, {"format": FORMAT, "version": VERSION, "name": spec.name,
                                                  "spec_file": str(Path(spec.file).resolve()), "cache": str(cache),
                                                  "created": now(), "overrides": list(spec.overrides)})
        # the plan: written each time (the same ids; a newer code's resolution may add settings)
        folder._write_text(folder.plan_path, "".join(json.dumps(p.to_json(), sort_keys=True) + "\n" for p in plan))
        (folder.root / "points").mkdir(exist_ok=True)
        return folder

    @classmethod
    def open(cls, root: Path) -> SweepFolder:
        folder = cls(root)
        if not folder.root.is_dir():
            raise SweepFolderError(f"{root}: no such sweep folder")
        if not folder.meta_path.is_file() or not folder.plan_path.is_file():
            raise SweepFolderError(f"{root}: not a sweep folder (no sweep.json / plan.jsonl; `moegs-bench sweep run "
                                   "SPEC --out DIR` makes one)")
        meta = folder.meta()
        if meta.get("format") != FORMAT:
            raise SweepFolderError(f"{folder.meta_path}: not a moegs-bench sweep file (format {meta.get('format')!r})")
        if meta.get("version") != VERSION:
            raise SweepFolderError(f"{folder.meta_path}: sweep folder version {meta.get('version')!r}; this "
                                   f"moegs-bench reads version {VERSION}")
        return folder

    # ------------------------------------------------------------------ files
    @property
    def meta_path(self) -> Path:
        return self.root / "sweep.json"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.jsonl"

    def meta(self) -> dict[str, Any]:
        return self._read_json(self.meta_path)

    def read_spec(self) -> dict[str, Any]:
        return self._read_json(self.root / "spec.json")

    @property
    def cache(self) -> Path:
        return Path(self.meta()["cache"])

    def plan(self) -> list[Point]:
        if self._plan is not None:
            return list(self._plan)
        points = []
        for n, line in enumerate(self.plan_path.read_text().splitlines(), 1):
            try:
                points.append(Point.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise SweepFolderError(f"{self.plan_path}: line {n} is not a point ({e})") from None
        return points

    def point(self, point_id: str) -> Point:
        for p in self.plan():
            if p.id == point_id:
                return p
        raise SweepFolderError(f"{self.root}: no point {point_id!r} in its plan")

    def point_dir(self, point: Point | str) -> Path:
        return self.root / "points" / (point if isinstance(point, str) else point.id)

    def result_dir(self, point: Point) -> Path:
        """The point's run / prune / distill folder (an expert point's is its cache entry, in its status)."""
        if point.command == "expert":
            folder = self.status(point).get("cache_folder")
            return Path(folder) if folder else self.point_dir(point) / "expert"
        return self.point_dir(point) / RESULT_FOLDER[point.command]

    def status_path(self, point: Point | str) -> Path:
        return self.point_dir(point) / "status.json"

    def log_path(self, point: Point | str) -> Path:
        return self.point_dir(point) / "log.txt"

    def status(self, point: Point | str) -> dict[str, Any]:
        path = self.status_path(point)
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {"state": "unreadable"}

    def write_status(self, point: Point | str, **changes: Any) -> dict[str, Any]:
        status = {**self.status(point), **changes}
        status.setdefault("point", point if isinstance(point, str) else point.id)
        self.point_dir(point).mkdir(parents=True, exist_ok=True)
        self._write_json(self.status_path(point), status)
        return status

    def add_provenance(self, entry: dict[str, Any]) -> None:
        path = self.root / "provenance.json"
        history = self._read_json(path) if path.is_file() else []
        self._write_json(path, [*history, entry])

    # ------------------------------------------------------------------ states
    def finished(self, point: Point) -> bool:
        if point.command == "expert":
            folder = self.status(point).get("cache_folder")
            return bool(folder) and (Path(folder) / "results.json").is_file()
        return (self.result_dir(point) / FINISHED_FILE[point.command]).is_file()

    def state(self, point: Point) -> PointState:
        status = self.status(point)
        if self.finished(point):
            return PointState(point, "done", status)
        if is_locked(self.point_dir(point)):
            return PointState(point, "running", status)
        saved = status.get("state")
        if saved == "running" or saved == "unreadable":
            return PointState(point, "lost", status)
        if saved in ("failed", "queued"):
            return PointState(point, saved, status)
        return PointState(point, "pending", status)

    def states(self, plan: Sequence[Point] | None = None) -> list[PointState]:
        return [self.state(p) for p in (self.plan() if plan is None else plan)]

    # ------------------------------------------------------------------ helpers
    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise SweepFolderError(f"{path}: missing") from None
        except (OSError, ValueError) as e:
            raise SweepFolderError(f"{path}: cannot read it ({e})") from None

    def _write_json(self, path: Path, data: Any) -> None:
        atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"))

    def _write_text(self, path: Path, text: str) -> None:
        atomic_write(path, lambda p: p.write_text(text))


def is_locked(folder: Path) -> bool:
    """Whether another process holds ``folder``'s lock (:mod:`moegs_bench.locks`); takes nothing."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextmanager
def point_lock(folder: SweepFolder, point: Point) -> Iterator[None]:
    """Hold the point's lock while it runs: a second worker of the same point (a requeued job while
    the killed one is still being torn down) waits, then finds it finished or runs it."""
    from moegs_bench.locks import folder_lock

    with folder_lock(folder.point_dir(point), wait=True, what="sweep point"):
        yield


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file ([] when missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines()[-lines:]]
