"""``sweep collect``: every finished point's records as one tidy table (one row per model per point).

Columns: the sweep and point (``sweep``, ``point``, ``stage``, ``command``), what varies (``scene``,
``seed`` and one column per axis key, expert lists joined with ``+``), the model (``model``: an
expert id, ``mixture``, ``average`` (the experts' uniform average), ``oracle`` (the per-pixel
oracle: a bound that uses the ground truth, never a method), or for a distill point the student
and ``<student> (baseline)``), and its figures (``psnr``, ``ssim``, ``lpips``, ``lpips_metric``,
``num_gaussians``, ``storage_mb``, ``render_fps``, ``train_seconds``) with the record's path.
A figure a record lacks is empty (NaN), never 0. Expert points are not rows of their own: each run
point's rows hold the experts it mixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moegs_bench.sweep.folder import SweepFolder
from moegs_bench.sweep.plan import Point

__all__ = ["COLUMNS", "collect", "write_tables"]

COLUMNS = ("sweep", "point", "stage", "command", "scene", "seed")
FIGURES = ("psnr", "ssim", "lpips", "lpips_metric", "num_gaussians", "storage_mb", "render_fps", "train_seconds")


def collect(folder: SweepFolder):
    """The table of every finished point of ``folder`` (a pandas DataFrame, in plan order)."""
    import pandas as pd

    plan = folder.plan()
    axes = [k for k in (folder.read_spec().get("axes") or {})]
    rows: list[dict[str, Any]] = []
    name = folder.meta().get("name")
    for p in plan:
        if p.command == "expert" or not folder.finished(p):
            continue
        base = {"sweep": name, "point": p.id, "stage": p.stage, "command": p.command, "scene": p.scene,
                "seed": p.seed, **{k: _cell(p.values.get(k)) for k in axes}}
        rows.extend({**base, **row} for row in _point_rows(folder, p))
    columns = [*COLUMNS, *axes, "model", "kind", *FIGURES, "record"]
    return pd.DataFrame(rows, columns=columns)


def _point_rows(folder: SweepFolder, p: Point) -> list[dict[str, Any]]:
    from moegs_bench.results import read_record

    out = folder.result_dir(p)
    if p.command in ("run", "prune"):
        mixture_path = out / "results" / "mixture.json"
        mixture = read_record(mixture_path)
        rows = []
        if p.command == "run":
            for eid in mixture.config.get("experts", []):
                path = out / "results" / f"{eid}.json"
                rows.append(_row(eid, read_record(path), path))
        rows.append(_row("mixture", mixture, mixture_path))
        for label, key in (("average", "uniform_average"), ("oracle", "oracle")):
            entry = (mixture.extra.get("baselines") or {}).get(key)
            if entry:
                rows.append({"model": label, "kind": "baseline", "psnr": entry.get("psnr"), "ssim": entry.get("ssim"),
                             "lpips": entry.get("lpips"), "lpips_metric": mixture.metrics.lpips_metric
                             if entry.get("lpips") is not None else None, "record": str(mixture_path)})
        return rows
    path = out / "results.json"
    record = read_record(path)
    student = p.identity["config"]["student"]
    rows = [_row(student, record, path, kind="distilled")]
    base = record.extra.get("baseline")
    if base:
        base_path = Path(base["folder"]) / "results.json"
        if base_path.is_file():
            rows.append(_row(f"{student} (baseline)", read_record(base_path), base_path, kind="baseline"))
    return rows


def _row(model: str, record, path: Path, kind: str | None = None) -> dict[str, Any]:
    m, t = record.metrics, record.timing
    return {"model": model, "kind": kind or record.kind, "psnr": m.psnr, "ssim": m.ssim, "lpips": m.lpips,
            "lpips_metric": m.lpips_metric, "num_gaussians": record.num_gaussians, "storage_mb": record.storage_mb,
            "render_fps": t.render_fps, "train_seconds": t.train_seconds, "record": str(path)}


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return value


def write_tables(folder: SweepFolder, table) -> list[Path]:
    """Write ``table`` as ``results/results.csv`` and ``results/results.parquet`` (each written
    whole, then renamed). Returns the paths written."""
    from moegs_bench.io import atomic_write

    target = folder.root / "results"
    target.mkdir(exist_ok=True)
    csv, parquet = target / "results.csv", target / "results.parquet"
    atomic_write(csv, lambda p: table.to_csv(p, index=False))
    atomic_write(parquet, lambda p: table.to_parquet(p, index=False))
    return [csv, parquet]
