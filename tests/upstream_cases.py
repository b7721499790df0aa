"""Shared pieces of the upstream-import tests: a small scene in the Dynamic3DGaussians layout with
the frame count and camera numbers an upstream fixture was made for, and the fixtures' folder."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from moegs_bench.cameras import Camera
from moegs_bench.data import panoptic
from moegs_bench.data.scene import Frame, PointCloud

FIXTURES = Path(__file__).parent / "data" / "upstream"


def run_import(fmt: str, model: Path, spec: str, out: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """``moegs-bench import FMT MODEL --scene SPEC --out OUT --cache CACHE --lpips none`` (in process)."""
    from test_cli import cli_here

    return cli_here("import", fmt, str(model), "--scene", spec, "--out", str(out), "--cache", str(cache),
                    "--lpips", "none")


def import_and_load(fmt: str, expert_cls: type, model: Path, spec: str, out: Path, cache: Path):
    """Import ``model`` (it must succeed) and load the folder as ``run --expert-run`` reads it:
    ``(expert, scene)``."""
    from moegs_bench.app.finished import load_expert_run
    from moegs_bench.data import open_scene

    proc = run_import(fmt, model, spec, out, cache)
    assert proc.returncode == 0, proc.stderr
    scene, scene_id = open_scene(spec, cache_dir=cache)
    return load_expert_run(expert_cls, scene, out, scene_id), scene


def fixture_quantities(g, colors: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What the fixtures record of a GaussianState ``g``, as the fixture scripts write them: means,
    scales, unit rotations, opacities and colours (``colors`` in place of ``g.colors``)."""
    return {"means": g.means.detach(), "scales": g.scales.detach(),
            "rotations": torch.nn.functional.normalize(g.quats.detach(), dim=1), "opacities": g.opacities.detach(),
            "colors": (g.colors if colors is None else colors).detach()}


def max_errors(g, expected: dict[str, np.ndarray], i: int) -> dict[str, float]:
    """The largest absolute difference of each fixture quantity of ``g`` from row ``i`` of ``expected``."""
    return {k: float(np.abs(v.numpy() - expected[k][i]).max()) for k, v in fixture_quantities(g).items()}


def write_scene(root: Path, num_frames: int, train_ids: tuple[int, ...], test_ids: tuple[int, ...] = (),
                *, width: int = 24, height: int = 18, seed: int = 0) -> str:
    """A ``panoptic:`` scene at ``root`` with ``num_frames`` frames, the cameras ``train_ids`` and
    ``test_ids`` on a ring looking at the origin, random images and a point cloud; returns its spec."""
    ids = tuple(train_ids) + tuple(test_ids)
    frames = []
    for t in range(num_frames):
        for cam in Camera.orbit(len(ids), radius=3.0, width=width, height=height, height_offset=0.5,
                                time=t / num_frames):
            cid = ids[cam.camera_id]
            cam = Camera(K=cam.K, viewmat=cam.viewmat, width=width, height=height, time=cam.time, camera_id=cid)
            frames.append(Frame(camera=cam, frame=t, key=f"c{cid}/{t}"))
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in frames]
    g = torch.Generator().manual_seed(seed)
    points = PointCloud(xyz=torch.rand(64, 3, generator=g) - 0.5, rgb=torch.rand(64, 3, generator=g), source="test")
    panoptic.write(root, frames, images, test_camera_ids=set(test_ids), points=points, name=root.name)
    return f"panoptic:{root}"


def copy_fixture(fmt: str, tmp_path: Path) -> Path:
    """A copy of the fixture ``fmt``'s upstream folder, to spoil: ``tmp_path / "model"``."""
    model = tmp_path / "model"
    shutil.copytree(FIXTURES / fmt / "model", model)
    return model


def edit_cfg_args(path: Path, **values: object) -> None:
    """Set ``key=value`` settings in a ``cfg_args`` file (``Namespace(...)`` text); each key must be there."""
    text = path.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"\b{key}=('[^']*'|True|False|-?\d+)", f"{key}={value!r}", text, count=1)
        assert n == 1, key
    path.write_text(text)
