"""``moegs-bench import``: a model trained with an expert's own code base becomes a finished
expert run folder of ours.

The upstream output folder is read by the format's importer (:mod:`moegs_bench.interop`) before
anything is written, so a refused import leaves ``--out`` as it was. The folder then holds what
``train-expert`` writes (``run.json``, ``expert.pt``, ``results.json``, ``renders/test/``), so
``run --expert-run ID=DIR``, ``prune`` and ``distill`` take it like a training of ours, plus
``upstream.json``: the format, the upstream repository and commit the importer follows, the
iteration, every imported file with its SHA-256 and the upstream settings read. The run's profile
is ``import:FORMAT``; its results record has no training time (the training happened upstream).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moegs_bench.data.scene import Scene
from moegs_bench.interop import get_importer
from moegs_bench.interop.base import Imported, Importer
from moegs_bench.io import atomic_write
from moegs_bench.metrics import LpipsMetric
from moegs_bench.results import ResultRecord, read_record, write_record
from moegs_bench.run_folder import EXPERT_RUN, read_identity, working_in
from moegs_bench.training.checkpoint import Checkpoint, save_checkpoint
from moegs_bench.training.trainer import FINAL_CKPT, RESULTS_FILE, expert_record

UPSTREAM_FILE = "upstream.json"
IMPORT_SEED = 0  # (nothing random happens; recorded because run folders carry a seed)


@dataclass
class ImportResult:
    out_dir: Path
    record: ResultRecord
    upstream: dict[str, Any]  # what upstream.json holds
    notes: list[str]
    reused: bool  # the same import was found finished and reported


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def upstream_provenance(importer: Importer, source: Path, imported: Imported) -> dict[str, Any]:
    """What ``upstream.json`` and the record's ``extra.upstream`` hold."""
    source = Path(source).resolve()
    files = {}
    for path in imported.files:
        path = Path(path).resolve()
        rel = path.relative_to(source).as_posix() if path.is_relative_to(source) else str(path)
        files[rel] = sha256_file(path)
    return {"format": importer.format, "repo": importer.upstream.repo, "commit": importer.upstream.commit,
            "folder": str(source), "iteration": imported.iteration, "files": dict(sorted(files.items())),
            "settings": imported.settings}


def import_upstream(fmt: str, source: Path, scene: Scene, scene_id: str, out_dir: Path, *,
                    iteration: int | None = None, force: bool = False, log: Callable[[str], None] = print,
                    lpips: LpipsMetric | None = None) -> ImportResult:
    """Import the upstream output folder ``source`` of format ``fmt`` for ``scene`` into ``out_dir``
    (see the module doc). A finished import of the same files is reported, not redone, unless
    ``force``; a folder holding another run is refused (``force`` replaces an import or training
    of the same expert)."""
    out_dir = Path(out_dir)
    importer = get_importer(fmt)
    imported = importer.load(Path(source), scene, iteration=iteration)  # (before anything is written)
    expert = imported.expert
    upstream = upstream_provenance(importer, source, imported)
    config = expert.config.to_dict()
    identity = {"kind": EXPERT_RUN, "expert": expert.info.id, "state_version": expert.state_version,
                "profile": f"import:{fmt}", "config": config, "scene": scene_id, "dataset": scene.state.digest,
                "seed": IMPORT_SEED, "upstream": {k: upstream[k] for k in ("format", "commit", "iteration", "files")}}
    finished = (out_dir / FINAL_CKPT).is_file() and (out_dir / RESULTS_FILE).is_file()
    if finished and not force and read_identity(out_dir) == identity:
        log(f"{out_dir}: this import is finished; reporting it (pass --force to redo)")
        return ImportResult(out_dir, read_record(out_dir / RESULTS_FILE), upstream, imported.notes, reused=True)
    with working_in(out_dir, identity, what="import", owned=(RESULTS_FILE, FINAL_CKPT, UPSTREAM_FILE, "renders"),
                    force=force):
        # the checkpoint the training engine writes at the end (the loop's identity and config; the
        # step its schedule ends at, which the importer sets from the upstream iteration: a continued
        # training, e.g. distill, goes on from there)
        ckpt = Checkpoint(kind="expert", identity={"expert": expert.info.id, "state_version": expert.state_version},
                          config=config, step=expert.config.train.iterations, finished=True, elapsed=0.0,
                          states={"model": expert.state_dict(), "densifier": None})
        save_checkpoint(out_dir / FINAL_CKPT, ckpt)
        _write_json(out_dir / UPSTREAM_FILE, upstream)
        log(f"evaluating the imported {expert.info.id} on {len(scene.test)} test views")
        record = expert_record(expert, scene, scene_id, out_dir, expert.config, f"import:{fmt}", IMPORT_SEED, 0.0,
                               lpips=lpips)
        record.extra["upstream"] = {**upstream, "train_seconds": None}
        write_record(out_dir / RESULTS_FILE, record)
    return ImportResult(out_dir, record, upstream, imported.notes, reused=False)


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda p: p.write_text(text))
