"""Find results records under any folders and turn them into report entries (one per model result).

Records are recognised by their content, never by their path: every ``*.json`` file under the
sources whose top-level ``"schema"`` is ``"moegs-bench/results"`` is read with
:func:`moegs_bench.results.read_record` (which migrates version 1 and refuses unknown versions,
naming them). A run folder, a sweep folder, an expert cache or any tree holding them all work.

Each record gives one :class:`Entry`, and a mixture record gives three more from the baselines it
carries: the uniform average of its experts (``average``), its single best expert (not repeated:
that is an expert entry already) and the per-pixel oracle (``oracle``, a bound that uses the ground
truth). The role of a record is read from its fields:

- ``kind == "expert"``: an expert (``extra.variant`` ``"distilled"`` / ``"baseline"``: a distilled
  student and its same-budget ground-truth baseline, see ``moegs-bench distill``);
- ``kind == "mixture"`` with ``config.prune``: a pruned mixture (``moegs-bench prune``);
- ``kind == "mixture"`` otherwise: a trained mixture (``moegs-bench run``).

The same record is often found more than once (a run folder copies its experts' records; every
sweep point repeats them). Records of one configuration and seed are merged: identical figures
silently, different figures with a warning (the newest record is used), and different code
(``provenance.git_commit``) always with a warning naming both commits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moegs_bench.errors import UserInputError
from moegs_bench.results import SCHEMA_NAME, ResultRecord, ResultsError, read_record

__all__ = ["Entry", "Found", "ReportInputError", "find_records", "entries_from", "scene_name"]

MAX_JSON_BYTES = 64 * 2**20  # larger JSON files are not results records (they hold per-view lists only)
_SCHEMA_PROBE = 4096  # bytes read to decide whether a JSON file is a results record
ROLES = ("expert", "mixture", "average", "oracle", "pruned", "distilled", "distill-baseline")
_FRAME = re.compile(r"(\d+)$")


class ReportInputError(UserInputError):
    """Sources that cannot be reported: no records, an unreadable record, a refused schema version."""


@dataclass(frozen=True)
class Entry:
    """One model's figures on one scene and seed, as a report uses them.

    ``settings`` holds what tells this entry apart from others of its role and experts (router
    settings of a mixture, ``prune.*`` of a pruned one, ``distill.*`` of a student), flattened to
    dotted keys with JSON-able values. A figure that the record lacks is ``None`` (printed "n/a"),
    never 0."""

    role: str
    model: str  # expert id, or "MoE-GS" / "Average" / "Oracle" / "<student> (distilled)" ...
    scene: str  # the scene spec, e.g. "synthetic:kitchen"
    seed: int
    experts: tuple[str, ...]  # the experts mixed; (id,) for an expert or a student
    settings: tuple[tuple[str, Any], ...] = ()
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    lpips_metric: str | None = None
    lpips_reason: str | None = None  # why ``lpips`` is None
    fps: float | None = None
    storage_mb: float | None = None
    train_s: float | None = None
    num_gaussians: int | None = None
    per_frame: tuple[tuple[int, float], ...] = ()  # (frame index, PSNR averaged over test cameras)
    regions: dict[str, Any] | None = field(default=None, compare=False)  # a mixture's per-regime results
    run_dir: Path | None = None  # the folder the record describes (a run folder, an expert folder)
    run_dirs: tuple[Path, ...] = field(default=(), compare=False)  # every folder holding this same result
    record: Path | None = None
    commit: str | None = None
    created: str = ""

    @property
    def dataset(self) -> str:
        """The scene spec's dataset part: ``synthetic`` for ``synthetic:kitchen``, else the scene."""
        return self.scene.split(":", 1)[0] if ":" in self.scene else self.scene

    @property
    def scene_name(self) -> str:
        return scene_name(self.scene)

    def setting(self, key: str, default: Any = None) -> Any:
        return dict(self.settings).get(key, default)

    def metric(self, name: str) -> float | None:
        """A figure by its report name (psnr, ssim, lpips, fps, storage_mb, train_s, num_gaussians)."""
        value = getattr(self, name)
        return None if value is None else float(value)


def scene_name(scene: str) -> str:
    """A scene spec's short name: ``kitchen`` for ``synthetic:kitchen`` and for ``panoptic:/data/kitchen``."""
    return Path(scene.split(":", 1)[-1]).name or scene


@dataclass
class Found:
    """The entries of some sources, and what a user should hear about them."""

    entries: list[Entry]
    records: list[Path]  # every record file read, sorted
    warnings: list[str]
    searched: list[Path]


# --------------------------------------------------------------------------------------- search


def find_records(sources: Sequence[Path | str]) -> list[Path]:
    """Every results-record file under ``sources`` (files or folders), sorted, each once.

    Hidden folders and files are skipped. :class:`ReportInputError` for a source that does not
    exist or a record that cannot be read (naming the file; a schema version this moegs-bench does
    not read is named as such)."""
    found: set[Path] = set()
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise ReportInputError(f"{path}: no such file or folder")
        if path.is_file():
            if not _is_record(path):
                raise ReportInputError(f"{path}: not a moegs-bench results record (no \"schema\": \"{SCHEMA_NAME}\")")
            found.add(path.resolve())
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.endswith(".json") and not name.startswith(".") and _is_record(Path(root) / name):
                    found.add((Path(root) / name).resolve())
    return sorted(found)


def _is_record(path: Path) -> bool:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return False
        with open(path, "rb") as f:
            head = f.read(_SCHEMA_PROBE)
    except OSError:
        return False
    # (cheap test first; the full parse below decides)
    return b'"schema"' in head and SCHEMA_NAME.encode() in head


def read_all(paths: Iterable[Path]) -> list[tuple[Path, ResultRecord]]:
    out = []
    for path in paths:
        try:
            out.append((path, read_record(path)))
        except ResultsError as exc:
            raise ReportInputError(str(exc)) from None
    return out


# -------------------------------------------------------------------------------------- entries


def entries_from(sources: Sequence[Path | str]) -> Found:
    """Read every record under ``sources`` and return their entries, merged (see module doc)."""
    searched = [Path(s) for s in sources]
    paths = find_records(searched)
    if not paths:
        where = ", ".join(str(s) for s in searched)
        raise ReportInputError(f"no moegs-bench results records under {where} (searched every *.json file for "
                               f"\"schema\": \"{SCHEMA_NAME}\"; run folders hold them in results/, expert folders "
                               "as results.json)")
    raw: list[Entry] = []
    for path, record in read_all(paths):
        raw.extend(record_entries(record, path))
    entries, warnings = merge(raw)
    return Found(entries=entries, records=paths, warnings=warnings, searched=searched)


def record_entries(record: ResultRecord, path: Path) -> list[Entry]:
    """The entries one record gives (see module doc)."""
    m, t, extra = record.metrics, record.timing, record.extra
    common = dict(scene=record.scene, seed=record.seed, record=path, commit=record.provenance.git_commit,
                  created=record.provenance.created, run_dir=_run_dir(path))
    figures = dict(psnr=m.psnr, ssim=m.ssim, lpips=m.lpips, lpips_metric=m.lpips_metric,
                   lpips_reason=m.lpips_unavailable_reason, fps=t.render_fps, storage_mb=record.storage_mb,
                   train_s=None if "upstream" in extra else t.train_seconds,  # (imported: trained upstream)
                   num_gaussians=record.num_gaussians)
    if record.kind == "expert":
        variant = extra.get("variant")
        expert = record.name
        if variant in ("distilled", "baseline"):
            distill = extra.get("distill") or {}
            settings = _flat({"distill": {k: v for k, v in distill.items() if k != "start_step"}})
            if variant == "baseline":
                settings = tuple((k, v) for k, v in settings if k != "distill.lam")
            role = "distilled" if variant == "distilled" else "distill-baseline"
            label = f"{expert} (distilled)" if role == "distilled" else f"{expert} (GT baseline)"
            return [Entry(role=role, model=label, experts=(expert,), settings=settings,
                          per_frame=_per_frame(m.per_view, "psnr"), **figures, **common)]
        return [Entry(role="expert", model=expert, experts=(expert,), settings=_expert_settings(record),
                      per_frame=_per_frame(m.per_view, "psnr"), **figures, **common)]
    experts = tuple(record.config.get("experts") or ())
    prune = record.config.get("prune")
    router = record.config.get("router") or {}
    settings = _flat({"router": router, "profile": record.config.get("profile"),
                      "expert_iterations": record.config.get("expert_iterations")})
    if prune:
        role, label = "pruned", "MoE-GS (pruned)"
        settings = settings + _flat({"prune": prune})
    else:
        role, label = "mixture", "MoE-GS"
    baselines = extra.get("baselines") or {}
    regions = baselines.get("regions") if baselines.get("regions_unavailable_reason") is None else None
    out = [Entry(role=role, model=label, experts=experts, settings=settings,
                 per_frame=_per_frame(m.per_view, "psnr"), regions=regions, **figures, **common)]
    if role == "mixture":  # (a pruned mixture's baselines are its pruned experts': not the experts' own)
        per_view = baselines.get("per_view") or []
        for key, role_b, label_b in (("uniform_average", "average", "Average"), ("oracle", "oracle", "Oracle")):
            b = baselines.get(key)
            if not b:
                continue
            prefix = "average" if key == "uniform_average" else "oracle"
            lp = b.get("lpips")
            out.append(Entry(
                role=role_b, model=label_b, experts=experts, settings=settings, psnr=b.get("psnr"),
                ssim=b.get("ssim"), lpips=lp, lpips_metric=m.lpips_metric if lp is not None else None,
                lpips_reason=None if lp is not None else (m.lpips_unavailable_reason or "not in the record"),
                fps=None, storage_mb=None, train_s=None, num_gaussians=None,
                per_frame=_per_frame([{"key": v.get("key"), "psnr": v.get(f"{prefix}_psnr")} for v in per_view],
                                     "psnr"), **common))
    return out


def _expert_settings(record: ResultRecord) -> tuple[tuple[str, Any], ...]:
    """An expert's profile and a digest of its whole configuration (two trainings of one expert
    with different settings are different entries)."""
    text = json.dumps(record.config, sort_keys=True, separators=(",", ":"), default=str)
    return (("profile", record.config.get("profile")), ("config", hashlib.sha256(text.encode()).hexdigest()[:12]))


def _flat(tree: dict[str, Any], prefix: str = "") -> tuple[tuple[str, Any], ...]:
    out: list[tuple[str, Any]] = []
    for key in sorted(tree):
        value = tree[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flat(value, name + "."))
        elif value is not None:
            out.append((name, _frozen(value)))
    return tuple(out)


def _frozen(value: Any) -> Any:
    """A JSON value made hashable: lists become tuples (recursively), objects sorted item tuples."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def _per_frame(per_view: list[dict[str, Any]], key: str) -> tuple[tuple[int, float], ...]:
    """Mean ``key`` per frame index (the trailing digits of a view key, ``cam00/000012`` -> 12)."""
    sums: dict[int, list[float]] = {}
    for view in per_view:
        match = _FRAME.search(str(view.get("key") or ""))
        value = view.get(key)
        if match is None or value is None or not math.isfinite(value):
            return ()  # (keys without a frame number: no per-frame curve rather than a wrong one)
        sums.setdefault(int(match.group(1)), []).append(float(value))
    return tuple((f, sum(v) / len(v)) for f, v in sorted(sums.items()))


def _run_dir(path: Path) -> Path:
    """The folder a record describes: ``<run>/results/x.json`` -> ``<run>``; ``<dir>/results.json`` -> ``<dir>``."""
    return path.parent.parent if path.parent.name == "results" else path.parent


# -------------------------------------------------------------------------------------- merging


def identity(entry: Entry) -> tuple:
    """What makes two entries the same configuration: role, model, scene, seed, experts, settings."""
    return (entry.role, entry.model, entry.scene, entry.seed, entry.experts, entry.settings)


def merge(entries: list[Entry]) -> tuple[list[Entry], list[str]]:
    """Entries of one :func:`identity` with the same figures become one (the newest record; a run
    folder's copy of an expert record and the expert folder's own are one result); entries of one
    configuration with different figures all stay (different trainings: a table uses the ones a
    mixture was built from, else the newest) and are warned about, as is a configuration run by
    different code. Stable order."""
    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        groups.setdefault(identity(e), []).append(e)
    out, warnings = [], []
    for key in sorted(groups, key=_sort_key):
        group = sorted(groups[key], key=newest_last)
        newest = group[-1]
        commits = sorted({str(e.commit) for e in group})
        what = f"{newest.model} on {newest.scene} (seed {newest.seed}{_experts_text(newest)})"
        results: dict[tuple, list[Entry]] = {}
        for e in group:
            results.setdefault((e.psnr, e.ssim, e.lpips, e.num_gaussians), []).append(e)
        problems = []
        if len(commits) > 1:
            problems.append(f"from different code (git commits {', '.join(c[:12] for c in commits)})")
        if len(results) > 1:
            psnrs = ", ".join(f"{same[-1].psnr:.4f}" if same[-1].psnr is not None else "n/a"
                              for same in results.values())
            problems.append(f"{len(results)} different results (PSNR {psnrs}); tables use the one a mixture was "
                            "built from, else the newest")
        if problems:
            warnings.append(f"{what}: {len(group)} records of the same configuration, " + ", ".join(problems))
        for same in results.values():  # (the newest record of each distinct result, with every folder it is in)
            dirs = tuple(sorted({e.run_dir for e in same if e.run_dir is not None}, key=str))
            out.append(replace(same[-1], run_dirs=dirs))
    return out, warnings


def newest_last(e: Entry) -> tuple:
    """Sort key: older records first (by ``provenance.created``, then path)."""
    return (e.created, str(e.record))


def _experts_text(e: Entry) -> str:
    return f", experts {'+'.join(e.experts)}" if e.role not in ("expert", "distilled", "distill-baseline") else ""


def _sort_key(key: tuple) -> tuple:
    role, model, scene, seed, experts, settings = key
    return (scene, ROLES.index(role), experts, model, json.dumps(settings, default=str), seed)
