"""``moegs-bench render-demo``: render a generated Gaussian scene and write PNGs plus a JSON record.

The output folder is checked before torch is imported, so mistakes fail fast.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moegs_bench.cli._common import UserError, versions
from moegs_bench.io import atomic_write, image_to_uint8

RECORD_NAME = "render_demo.json"
IMAGE_GLOB = "cam_*.png"


def image_name(index: int) -> str:
    return f"cam_{index:02d}.png"


# --------------------------------------------------------------------------------- output folder


def prepare_out_dir(out: Path, *, force: bool) -> list[Path]:
    """Create ``out`` if needed and check that we may write there; return the folders created
    (deepest first).

    A folder that already holds files is refused unless ``force``; with ``force`` the images and
    record of an earlier run are removed (other files are left alone).
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not force:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(
                f"--out {out} is not empty ({len(entries)} entries: {shown}); "
                "pass --force to write into it or choose another folder"
            )
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # a real write probe (permissions, read-only fs)
            pass
    except OSError as exc:
        raise UserError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc
    if force:
        for old in [*out.glob(IMAGE_GLOB), out / RECORD_NAME]:
            if old.is_file():
                old.unlink()
    return created


# --------------------------------------------------------------------------------------- backend


def choose_backend(requested: str) -> tuple[str, str]:
    """``(backend, device)`` for ``--backend auto|torch|gsplat`` by the renderer's one policy
    (``moegs_bench.render.resolve_backend``): the scene goes to ``cuda`` when gsplat will render
    it (asked for, or ``auto`` with gsplat usable), else to ``cpu``; an unusable gsplat is a
    UserError saying why."""
    from moegs_bench.render import BackendUnavailable, device_for, resolve_backend

    device = device_for(requested)
    try:
        return resolve_backend(requested, device), device
    except BackendUnavailable as exc:
        raise UserError(f"--backend {requested} is not usable here: {exc.reason} (try --backend torch)") from None


# ---------------------------------------------------------------------------------------- render


def run_render_demo(
    *,
    out: Path,
    gaussians: int,
    width: int,
    height: int,
    cameras: int,
    seed: int,
    backend: str,
    force: bool,
) -> dict[str, Any]:
    """Build the demo scene, render every camera, write the PNGs and the record; return it."""
    from rich.console import Console

    console = Console()
    for name, value, low in (("--gaussians", gaussians, 1), ("--width", width, 1), ("--height", height, 1),
                             ("--cameras", cameras, 1), ("--seed", seed, 0)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if backend not in ("auto", "torch", "gsplat"):
        raise UserError(f"--backend must be auto, torch or gsplat, got {backend!r}")
    out = out.expanduser()
    created = prepare_out_dir(out, force=force)
    try:
        return _render(console, out, gaussians, width, height, cameras, seed, backend)
    except BaseException:
        for folder in created:  # leave no empty folder behind a failed run
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _render(
    console: Any, out: Path, gaussians: int, width: int, height: int, cameras: int, seed: int, backend: str
) -> dict[str, Any]:
    import imageio.v3 as iio
    import torch

    from moegs_bench.demo import make_demo_scene
    from moegs_bench.render import render

    used, device = choose_backend(backend)

    t0 = time.perf_counter()
    state, cams = make_demo_scene(gaussians, seed=seed, width=width, height=height, n_cameras=cameras)
    build_ms = (time.perf_counter() - t0) * 1e3
    state = state.to(device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows: list[dict[str, Any]] = []
    with _progress(console) as progress, torch.no_grad():
        task = progress.add_task(f"rendering ({used} on {device})", total=len(cams))
        for i, cam in enumerate(cams):
            cam = cam.to(device)
            sync()
            t = time.perf_counter()
            img, alpha, meta = render(state, cam, backend=used)
            sync()
            render_ms = (time.perf_counter() - t) * 1e3
            if isinstance(meta, dict) and isinstance(meta.get("backend"), str):
                used = meta["backend"]
            name = image_name(i)
            pixels = _to_uint8(img)
            atomic_write(out / name, lambda p, px=pixels: iio.imwrite(p, px, extension=".png"))
            rows.append(
                {
                    "file": name,
                    "camera_id": _plain(getattr(cam, "camera_id", i)),
                    "width": int(cam.width),
                    "height": int(cam.height),
                    "render_ms": round(render_ms, 3),
                    "coverage": round(float(alpha.float().mean()), 6),
                }
            )
            progress.advance(task)

    times = [r["render_ms"] for r in rows]
    record = {
        "tool": "moegs-bench render-demo",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "gaussians": gaussians,
            "width": width,
            "height": height,
            "cameras": cameras,
            "seed": seed,
            "backend": backend,
        },
        "backend": used,
        "device": device if device == "cpu" else f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})",
        "scene": {
            "n_gaussians": state.num_gaussians,
            "sh_degree": _plain(state.sh_degree),
            "build_ms": round(build_ms, 3),
        },
        "cameras": rows,
        "render_ms": {
            "total": round(sum(times), 3),
            "mean": round(statistics.fmean(times), 3),
            "median": round(statistics.median(times), 3),
            "note": "wall time of render() per camera; the first includes warm-up",
        },
        "versions": versions(),
    }
    atomic_write(out / RECORD_NAME, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    _print_summary(console, record, out)
    return record


def _progress(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    )


def _to_uint8(img: Any) -> Any:
    """[H,W,D] float in [0, 1] -> [H,W,3] or [H,W] uint8 numpy (extra channels dropped)."""
    return image_to_uint8(img[..., :3] if img.shape[-1] >= 3 else img[..., 0])


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars as plain Python values for JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _print_summary(console: Any, record: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    s, scene = record["settings"], record["scene"]
    console.print(
        f"render-demo: {scene['n_gaussians']} Gaussians, {s['width']}x{s['height']}, "
        f"backend {record['backend']} on {record['device']}",
        highlight=False,
    )
    table = Table()
    table.add_column("camera")
    table.add_column("file")
    table.add_column("render ms", justify="right")
    table.add_column("coverage", justify="right")
    for row in record["cameras"]:
        table.add_row(str(row["camera_id"]), row["file"], f"{row['render_ms']:.1f}", f"{row['coverage']:.3f}")
    ms = record["render_ms"]
    table.add_section()
    table.add_row("all", "", f"{ms['total']:.1f}", "", end_section=True)
    console.print(table)
    console.print(f"Wrote {len(record['cameras'])} images and {RECORD_NAME} to {out}", highlight=False)
