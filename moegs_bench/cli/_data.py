"""``moegs-bench data synth`` and ``moegs-bench data info``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from moegs_bench.cli._common import UserError, check_writable, facts_table


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
    check_writable("OUT", out)
    t0 = time.perf_counter()
    generate(out, scene, frames=frames, width=width, height=height, seed=seed, train_cameras=train_cameras)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    Console().print(
        f"Wrote synthetic scene [b]{scene}[/b] ({frames} frames, {train_cameras} + 1 cameras, "
        f"{width}x{height}) to {out} in {time.perf_counter() - t0:.1f} s, {size / 2**20:.1f} MB"
    )
    run_info(out, downscale=1, frames=None, as_json=False)


#: What ``data info`` says about the images without ``--check``.
NOT_DECODED = "not decoded (pass --check to decode every image)"


def run_info(path: str | Path, *, downscale: int | None, frames: str | None, as_json: bool, check: bool = False,
             progress: bool = True, frame_stride: int = 1, test_cameras: str | None = None) -> None:
    """Print a dataset's facts; with ``check``, decode every image first (README, ``data info``).

    A check that finds bad images still prints the facts, then each bad image (its key and what
    is wrong), and ends with one error line naming the first: exit code 2. Nothing is written.
    """
    from rich.console import Console

    from moegs_bench.cli._common import parse_camera_ids

    held_out = None if test_cameras is None else parse_camera_ids("--test-cameras", test_cameras)
    scene = _load(path, downscale, parse_frame_range(frames), frame_stride, held_out)
    facts = _facts(scene)
    bad: list[tuple[str, str]] = []
    if check:
        bad = check_images(scene, progress=progress)
        total = len(scene.data.frames)
        note = (f"all {total} decoded, each the size of its camera" if not bad
                else f"{len(bad)} of {total} cannot be used (listed below)")
        images = {"decoded": True, "count": total, "bad": [{"key": k, "error": e} for k, e in bad], "note": note}
    else:
        images = {"decoded": False, "count": len(scene.data.frames), "bad": [], "note": NOT_DECODED}
    if as_json:
        print(json.dumps({**facts, "images": images}, indent=2, default=str))
    else:
        console = Console()
        console.print(facts_table(f"{scene.format}: {scene.name}", {**facts, "images": images["note"]}))
        for key, error in bad:
            console.print(f"bad image {key}: {error}", markup=False, highlight=False, soft_wrap=True)
    if bad:
        raise UserError(f"{len(bad)} of {len(scene.data.frames)} images failed --check; the first: {bad[0][1]}")


def _load(path: str | Path, downscale: int | None, frame_range: tuple[int, int] | None, frame_stride: int = 1,
          test_cameras: tuple[int, ...] | None = None):
    """The scene at ``downscale`` (None: the format's default) with ``test_cameras`` held out; a
    downscale that leaves a camera without pixels is a one-line error naming ``--downscale`` and
    the largest usable value, unknown test cameras one naming ``--test-cameras``."""
    from moegs_bench.cameras import downscale_problem
    from moegs_bench.data import Scene, load_scene
    from moegs_bench.data.scene import test_cameras_problem

    full = load_scene(path, downscale=1, frame_range=frame_range, frame_stride=frame_stride)  # >= 1 pixel each
    wanted = full.data.default_downscale if downscale is None else downscale
    problem = downscale_problem((f.camera for f in full.data.frames), wanted)
    if problem is not None:
        given = "--downscale " if downscale is not None else f"--downscale not given: the {full.format} default "
        raise UserError(given + problem)
    if test_cameras is not None and (problem := test_cameras_problem(full.data, test_cameras)):
        raise UserError(f"--test-cameras: {problem}")
    if wanted == 1 and test_cameras is None:
        return full
    return Scene(full.data, downscale=wanted, cache_dir=full.cache_dir, test_cameras=test_cameras)


def _facts(scene) -> dict[str, object]:
    from moegs_bench.data.scene import FALLBACK_POINTS

    full = scene.data.frames[0].camera
    test_ids = sorted({f.camera.camera_id for f in scene.test})
    if scene.data.points is not None:  # (sampling the rays' points would decode images: training does it)
        lo, hi = scene.bounds
        points = {"points": f"{scene.points.xyz.shape[0]} ({scene.points.source})",
                  "bounds min": [round(v, 3) for v in lo.tolist()], "bounds max": [round(v, 3) for v in hi.tolist()]}
    else:
        points = {"points": f"none in the dataset; training samples {FALLBACK_POINTS} along the training rays "
                            "(moegs_bench.data.init_points)"}
    return {
        "path": str(scene.data.root),
        "format": scene.format,
        "name": scene.name,
        "cameras": len(scene.camera_ids),
        "train images": len(scene.train),
        "test images": len(scene.test),
        "test cameras": (test_ids if len(test_ids) <= 8 else f"{len(test_ids)} ids") if test_ids else
                        "none (no test split: choose held-out cameras with --test-cameras)",
        "frames": scene.num_frames,
        "resolution": f"{full.width}x{full.height}",
        "downscale": scene.downscale,
        "resolution used": "{}x{}".format(*scene.resolution),
        **points,
        "background": list(scene.data.background),
        **{str(k): v for k, v in scene.data.meta.items()},
    }


def check_images(scene, *, progress: bool = True) -> list[tuple[str, str]]:
    """Decode every image of ``scene`` (train and test, full resolution) with ``Scene.decode``
    (``Scene.image`` without its cache): the loader's reader, 8-bit RGB, the size its camera says.
    Returns ``(key, what is wrong)`` of each bad image, in the loader's order (empty: all good).
    The progress bar goes to stderr, and only to a terminal."""
    import sys

    from tqdm import tqdm

    from moegs_bench.errors import InputError

    bad: list[tuple[str, str]] = []
    frames = scene.data.frames  # full-resolution frames
    bar = tqdm(frames, desc="decode images", unit="image", file=sys.stderr, leave=False, dynamic_ncols=True,
               disable=True if not progress else None)  # None: only on a terminal
    try:
        for frame in bar:
            try:
                scene.decode(frame)  # [H, W, 3] uint8, its size checked
            except InputError as exc:  # DatasetError and the like: a message naming the file
                bad.append((frame.key, " ".join(str(exc).split())))
    finally:
        bar.close()
    return bad
