"""Make the Spacetime Gaussians (lite) import fixture by running upstream's own code on CPU.

    python scripts/upstream_fixtures/stg.py --upstream /path/to/SpacetimeGaussians --out tests/data/upstream/stg

Upstream (oppo-us-research/SpacetimeGaussians) trains one model per segment of ``--duration``
frames from ``<scene>/colmap_<start>``. This script builds two random lite models
(``scene/ourslite.py`` ``GaussianModel``) for the segments ``colmap_0`` and ``colmap_10`` of a
20-frame scene (``--duration 10``) and saves each in upstream's layout under ``<out>/model/``:
``colmap_<start>/cfg_args`` (``train.py``: ``str(Namespace(**vars(args)))`` of the arguments
``helper3dg.getparser`` parses, config ``configs/techni_lite/Birthday.json``),
``colmap_<start>/cameras.json`` (``scene/__init__.py`` with ``utils/camera_utils.camera_to_JSON``)
and ``colmap_<start>/point_cloud/iteration_<N>/point_cloud.ply`` (``GaussianModel.save_ply``). It
then runs upstream's lite training renderer (``renderer/__init__.py`` ``train_ours_lite``, with
``helper_train.trbfunction``) at frames of both segments, its rasteriser replaced by a stub that
records the Gaussians handed to it, and writes ``<out>/expected.npz`` and ``<out>/meta.json``.

What cannot run on this CPU-only machine is stubbed (each stub is named where it is made): the
CUDA extensions (``simple_knn._C``, ``mmcv.ops``; the rasteriser), the data-preparation modules
upstream imports but this path never calls (``cv2``, ``kornia``, ``script.pre_immersive_distorted``),
``torch.cuda.set_device`` in ``safe_state``, and the renderer's ``device="cuda"`` in
``torch.zeros_like``/``ones_like``/``ones``. Nothing of upstream is copied: its modules are imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from moegs_bench.cameras import Camera  # (before upstream's folders go on sys.path)

from _checkout import require_commit  # (this folder, on sys.path when run as a script)

REPO = "oppo-us-research/SpacetimeGaussians"
COMMIT = "427abfc58309a4a5213843dd673fb22c4529306c"
NUM_FRAMES = 20  # the scene: 20 frames, our time t = j / 20
DURATION = 10  # upstream's --duration: frames per segment
STARTS = (0, 10)  # the segments colmap_0 (frames 0-9) and colmap_10 (frames 10-19)
SIZES = (240, 200)  # Gaussians per segment
ITERATION = 25000  # the iteration folder saved (techni_lite's test_iteration)
FRAMES = (0, 6, 9, 10, 19)  # frames compared: both ends of both segments and the middle
TRAIN_IDS, TEST_IDS = (1, 2, 3), (0,)  # write_scene's cameras: cam00 is the test view (as in N3D)
CONFIG = "configs/techni_lite/Birthday.json"  # a lite config (rdpip train_ours_lite, model ours_lite)
SEED = 0


def stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def cuda_only(*_args, **_kwargs):
    raise RuntimeError("a CUDA kernel was called; the fixture path must not need one")


def import_upstream(root: Path) -> dict[str, types.ModuleType]:
    """Upstream's modules, importable on CPU (stubs as described in the module doc)."""
    sys.path[:0] = [str(root), str(root / "thirdparty" / "gaussian_splatting")]
    # CUDA extensions, imported at module level by ourslite/oursfull/helper_model/helper_train:
    stub("simple_knn")
    stub("simple_knn._C", distCUDA2=cuda_only)
    stub("mmcv")
    stub("mmcv.ops", knn=cuda_only)
    # Data-preparation dependencies (video/fisheye tools) not installed here, unused on this path:
    stub("cv2")
    stub("kornia", create_meshgrid=cuda_only)
    stub("script.pre_immersive_distorted", SCALEDICT={})
    # `scene/__init__.py` imports the dataset readers (COLMAP, images); make `scene` a bare package
    # so that `scene.ourslite` / `scene.cameras` load on their own.
    scene_pkg = stub("scene")
    scene_pkg.__path__ = [str(root / "thirdparty" / "gaussian_splatting" / "scene")]
    import helper_train  # noqa: E402 - upstream modules, after the stubs
    from scene import ourslite  # noqa: E402
    from thirdparty.gaussian_splatting import helper3dg, renderer  # noqa: E402
    from utils import camera_utils, graphics_utils  # noqa: E402
    return {"helper_train": helper_train, "ourslite": ourslite, "helper3dg": helper3dg, "renderer": renderer,
            "camera_utils": camera_utils, "graphics_utils": graphics_utils}


def random_model(ourslite: types.ModuleType, n: int, g: torch.Generator):
    """An upstream lite GaussianModel with random, trained-looking parameters (every term non-zero)."""
    model = ourslite.GaussianModel(3, "rgbv1")  # (train.py: GaussianModel(dataset.sh_degree, rgbfunction))

    def param(t: torch.Tensor) -> nn.Parameter:
        return nn.Parameter(t.float().contiguous().requires_grad_(True))

    rn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    ru = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    model._xyz = param(ru(n, 3) - 0.5)
    model._features_dc = param(0.05 + 0.9 * ru(n, 3))  # raw RGB (lite); kept >= 0, see meta.json
    model._opacity = param(1.5 * rn(n, 1))
    model._scaling = param(-3.5 + 0.5 * rn(n, 3))
    model._rotation = param(rn(n, 4))  # unnormalised, as training leaves it
    model._trbf_center = param(ru(n, 1))  # segment time of the Gaussian's centre
    model._trbf_scale = param(-0.7 + 0.4 * rn(n, 1))  # log temporal width
    model._motion = param(torch.cat([0.3 * rn(n, 3), 0.3 * rn(n, 3), 0.3 * rn(n, 3)], 1))
    model._omega = param(0.5 * rn(n, 4))
    return model


def write_cfg_args(helper3dg: types.ModuleType, root: Path, out: Path, start: int) -> Namespace:
    """``cfg_args`` as train.py writes it: the arguments of ``helper3dg.getparser()`` for the
    README's training command with ``--duration 10``, run in ``out`` with ``--model_path
    model/colmap_<start>`` (paths in the file stay relative, as a user's would)."""
    argv = ["train.py", "--quiet", "--eval", "--config", str(root / CONFIG), "--model_path", f"model/colmap_{start}",
            "--source_path", f"data/fixture_scene/colmap_{start}", "--duration", str(DURATION)]
    old_argv, old_stdout, old_cwd, set_device = sys.argv, sys.stdout, os.getcwd(), torch.cuda.set_device
    torch.cuda.set_device = lambda *_: None  # safe_state selects cuda:0; there is none here
    try:
        sys.argv = argv
        os.chdir(out)
        args, *_ = helper3dg.getparser()
        args.configpath = CONFIG  # (relative to the checkout, as typed from there)
        with open(os.path.join(args.model_path, "cfg_args"), "w") as cfg_log_f:  # train.py, train()
            cfg_log_f.write(str(Namespace(**vars(args))))
    finally:
        sys.argv, sys.stdout, torch.cuda.set_device = old_argv, old_stdout, set_device  # (safe_state swaps stdout)
        os.chdir(old_cwd)
    return args


def write_cameras_json(up: dict, model_path: Path, start: int) -> None:
    """``cameras.json`` as ``Scene.__init__`` writes it (test cameras, then train cameras, one entry
    per camera and frame of the segment), for the cameras ``tests/upstream_cases.write_scene`` makes."""
    ids = TRAIN_IDS + TEST_IDS
    fov = up["graphics_utils"].focal2fov
    cams = {}
    for cam in Camera.orbit(len(ids), radius=3.0, width=24, height=18, height_offset=0.5):
        view = cam.viewmat.double().numpy()
        K = cam.K.double().numpy()
        cams[ids[cam.camera_id]] = dict(R=view[:3, :3].T, T=view[:3, 3], FovX=fov(K[0, 0], 24), FovY=fov(K[1, 1], 18),
                                        width=24, height=18, image_name=f"cam{ids[cam.camera_id]:02d}")
    order = sorted(TEST_IDS) + sorted(TRAIN_IDS)  # (--eval: the first camera by name is the test one)
    camlist = [types.SimpleNamespace(**cams[c]) for c in order for _ in range(start, start + DURATION)]
    json_cams = [up["camera_utils"].camera_to_JSON(i, cam) for i, cam in enumerate(camlist)]
    with open(os.path.join(model_path, "cameras.json"), "w") as file:
        json.dump(json_cams, file, indent=2)


class _TorchOnCpu:
    """``torch`` for the renderer module, its hard-coded ``device="cuda"`` in ``zeros_like``,
    ``ones_like`` and ``ones`` dropped (the only change to ``train_ours_lite``)."""

    def __getattr__(self, name: str):
        return getattr(torch, name)

    @staticmethod
    def zeros_like(t, *args, device=None, **kwargs):
        return torch.zeros_like(t, *args, **kwargs)

    @staticmethod
    def ones_like(t, *args, device=None, **kwargs):
        return torch.ones_like(t, *args, **kwargs)

    @staticmethod
    def ones(*args, device=None, **kwargs):
        return torch.ones(*args, **kwargs)


class RecordingRasterizer:
    """Stands in for ``diff_gaussian_rasterization_ch3.GaussianRasterizer`` (CUDA): records the
    Gaussians ``train_ours_lite`` hands over."""

    last: dict[str, torch.Tensor] = {}

    def __init__(self, raster_settings) -> None:
        self.settings = raster_settings

    def __call__(self, **inputs):
        RecordingRasterizer.last = {k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        n = inputs["means3D"].shape[0]
        h, w = self.settings.image_height, self.settings.image_width
        return torch.zeros(3, h, w), torch.ones(n, dtype=torch.int32), torch.zeros(1, h, w)


def upstream_gaussians(up: dict, model, timestamp: float) -> dict[str, np.ndarray]:
    """What ``train_ours_lite`` rasterises for a camera at ``timestamp`` (segment time)."""
    renderer = up["renderer"]
    renderer.torch = _TorchOnCpu()
    camera = types.SimpleNamespace(FoVx=1.0, FoVy=1.0, image_height=4, image_width=4, timestamp=timestamp,
                                   world_view_transform=torch.eye(4), full_proj_transform=torch.eye(4),
                                   camera_center=torch.zeros(3))
    with torch.no_grad():
        renderer.train_ours_lite(camera, model, None, torch.zeros(3), basicfunction=up["helper_train"].trbfunction,
                                 GRsetting=lambda **kw: types.SimpleNamespace(**kw), GRzer=RecordingRasterizer)
    got = RecordingRasterizer.last
    return {"means": got["means3D"], "scales": got["scales"], "rotations": got["rotations"],
            "opacities": got["opacities"][:, 0], "colors": got["colors_precomp"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="a SpacetimeGaussians checkout")
    ap.add_argument("--out", type=Path, required=True, help="the fixture folder (tests/data/upstream/stg)")
    a = ap.parse_args()
    root, out = a.upstream.resolve(), a.out.resolve()
    require_commit(root, REPO, COMMIT)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    up = import_upstream(root)
    os.chdir(root)  # (upstream's modules expect to run from the checkout)

    g = torch.Generator().manual_seed(SEED)
    models = []
    for start, n in zip(STARTS, SIZES):
        model_path = out / "model" / f"colmap_{start}"
        model_path.mkdir(parents=True, exist_ok=True)
        model = random_model(up["ourslite"], n, g)
        write_cfg_args(up["helper3dg"], root, out, start)
        write_cameras_json(up, model_path, start)
        model.save_ply(os.path.join(model_path, "point_cloud", f"iteration_{ITERATION}", "point_cloud.ply"))
        models.append(model)

    # expected: rows of all segments in folder order (colmap_0, colmap_10); at each frame only the
    # segment holding it is rendered: its rows are upstream's Gaussians, the others' opacity is 0
    # (their other values NaN: not rendered, not compared).
    total = sum(SIZES)
    rows = np.concatenate([np.full(n, k) for k, n in enumerate(SIZES)])
    shapes = {"means": (3,), "scales": (3,), "rotations": (4,), "opacities": (), "colors": (3,)}
    expected = {k: np.full((len(FRAMES), total, *s), np.nan, np.float32) for k, s in shapes.items()}
    visible = []
    for i, j in enumerate(FRAMES):
        k = next(k for k, s in enumerate(STARTS) if s <= j < s + DURATION)
        visible.append(k)
        timestamp = (j - STARTS[k]) / DURATION  # scene/dataset_readers.py: timestamp=(j-startime)/duration
        got = upstream_gaussians(up, models[k], timestamp)
        for name, value in got.items():
            expected[name][i][rows == k] = value.numpy()
        expected["opacities"][i][rows != k] = 0.0
    np.savez_compressed(out / "expected.npz", frames=np.array(FRAMES, np.int64), segment=rows.astype(np.int64),
                        visible=np.array(visible, np.int64), **expected)
    meta = {
        "upstream": {"repo": REPO, "commit": COMMIT},
        "command": "python scripts/upstream_fixtures/stg.py --upstream /path/to/SpacetimeGaussians --out "
                   "tests/data/upstream/stg",
        "scene": {"num_frames": NUM_FRAMES, "train_ids": list(TRAIN_IDS), "test_ids": list(TEST_IDS),
                  "writer": "tests/upstream_cases.py write_scene(root, num_frames, train_ids, test_ids)"},
        "segments": [{"folder": f"model/colmap_{s}", "start": s, "duration": DURATION, "num_gaussians": n,
                      "iteration": ITERATION} for s, n in zip(STARTS, SIZES)],
        "time": "frame j lies in the segment colmap_<start> with start <= j < start + duration; upstream's time "
                "there is (j - start) / duration (scene/dataset_readers.py readColmapCameras); ours is j / num_frames",
        "expected": "rows: the segments' Gaussians in folder order (segment[N]); at frames[i] the segment visible[i] "
                    "is upstream's train_ours_lite output (means, scales exp, rotations normalised, opacities "
                    "sigmoid x temporal RBF, colors = raw RGB colors_precomp); the other rows have opacity 0, other "
                    "values NaN",
        "colour": "lite colour is the raw RGB f_dc_0..2 (no SH, no activation; image clamped only after "
                  "compositing, test.py); the fixture keeps it in [0.05, 0.95] (a negative channel renders as 0 "
                  "through SH)",
        "patched": ["stub modules simple_knn._C, mmcv.ops (CUDA), cv2, kornia, script.pre_immersive_distorted "
                    "(unused data tools)", "bare `scene` package (its __init__ loads datasets)",
                    "torch.cuda.set_device no-op during helper3dg.getparser (safe_state)",
                    "renderer module's torch.zeros_like/ones_like/ones ignore device='cuda'",
                    "the CUDA rasteriser replaced by a recorder of its inputs"],
        "seed": SEED,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out} ({total} Gaussians, frames {list(FRAMES)})")


if __name__ == "__main__":
    main()
