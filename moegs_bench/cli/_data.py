"""``moegs-bench data synth`` and ``moegs-bench data info``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from moegs_bench.cli._common import UserError, facts_table


def parse_frame_range(text: str | None) -> tuple[int, int] | None:
    """``"START:END"`` (END exclusive) -> (START, END)."""
    if text is None:
        return None
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise UserError(f"--frames: expected START:END (END exclusive), got {text!r}") from None


def run_synth(out: Path, *, scene: str | None, frames: int, width: int, height: int, seed: int, train_cameras: int) -> None:
    from rich.console import Console

    from moegs_bench.data.synthetic import DEFAULT_SCENE, SCENES, generate

    scene = scene or DEFAULT_SCENE
    if scene not in SCENES:
        raise UserError(f"--scene: unknown synthetic scene {scene!r}; expected one of {', '.join(SCENES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; choose a new OUT")
    t0 = time.perf_counter()
    generate(out, scene, frames=frames, width=width, height=height, seed=seed, train_cameras=train_cameras)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    Console().print(
        f"Wrote synthetic scene [b]{scene}[/b] ({frames} frames, {train_cameras} + 1 cameras, "
        f"{width}x{height}) to {out} in {time.perf_counter() - t0:.1f} s, {size / 2**20:.1f} MB"
    )
    run_info(out, downscale=1, frames=None, as_json=False)


def run_info(path: str | Path, *, downscale: int | None, frames: str | None, as_json: bool) -> None:
    from rich.console import Console

    from moegs_bench.data import load_scene

    scene = load_scene(path, downscale=downscale, frame_range=parse_frame_range(frames))
    full = scene.data.frames[0].camera
    lo, hi = scene.bounds
    test_ids = sorted(scene.data.test_camera_ids)
    facts = {
        "path": str(scene.data.root),
        "format": scene.format,
        "name": scene.name,
        "cameras": len(scene.camera_ids),
        "train images": len(scene.train),
        "test images": len(scene.test),
        "test cameras": test_ids if len(test_ids) <= 8 else f"{len(test_ids)} ids",
        "frames": scene.num_frames,
        "resolution": f"{full.width}x{full.height}",
        "downscale": scene.downscale,
        "resolution used": "{}x{}".format(*scene.resolution),
        "points": f"{scene.points.xyz.shape[0]} ({scene.points.source})",
        "bounds min": [round(v, 3) for v in lo.tolist()],
        "bounds max": [round(v, 3) for v in hi.tolist()],
        "background": list(scene.data.background),
        **{str(k): v for k, v in scene.data.meta.items()},
    }
    if as_json:
        print(json.dumps(facts, indent=2, default=str))
        return
    Console().print(facts_table(f"{scene.format}: {scene.name}", facts))
