"""Make the 4DGaussians import fixture with upstream's own code (hustvl/4DGaussians, pinned commit).

    python scripts/upstream_fixtures/4dgaussians.py --upstream /path/to/4DGaussians \
        --out tests/data/upstream/4dgaussians

What it does, all on the CPU:

1. writes a small Panoptic-Sports scene (``tests/upstream_cases.write_scene``: 20 timesteps, training
   cameras 0-2, test camera 3) into a temporary folder, and builds upstream's ``args`` as
   ``train.py`` does (upstream's ``ModelParams``/``OptimizationParams``/``PipelineParams``/
   ``ModelHiddenParams`` parsers, a small ``--configs``-style override applied with upstream's
   ``merge_hparams``), writing ``cfg_args`` the way ``train.py``'s ``prepare_output_and_logger`` does;
2. builds upstream's ``Scene`` on it (upstream's PanopticSports reader gives timestep i of T the
   time i / T, and ``Scene`` sets the HexPlane aabb from the point cloud), replaces the Gaussians by
   random ones (160 coarse / 200 fine rows, SH degree 3) and every deformation weight by random
   values (so every term is clearly non-zero), and saves the coarse stage (``coarse_iteration_3000``) and, with new
   random Gaussians and weights, the fine stage (``iteration_14000``) with upstream's ``Scene.save``
   into ``<out>/model/`` (exactly ``output/<expname>/``);
3. reloads each folder with upstream's loading code (``Scene(load_iteration=...)``;
   ``load_ply`` + ``load_model`` for the coarse folder, which upstream's ``Scene`` cannot load) and
   runs upstream's ``gaussian_renderer.render`` at frames 0, 5, 10, 19 (the variants: 0, 19) of a
   training camera; a stub
   rasterizer records what ``render`` hands it (deformed means, exp scales, normalised quaternions,
   sigmoid opacities, SH [N, 16, 3]) into ``expected.npz`` (fine stage), ``expected_coarse.npz``
   (coarse stage: no deformation) and ``expected_no_do_dshs.npz`` (fine stage rendered with
   ``no_do=True, no_dshs=True``, upstream's ``ModelHiddenParams`` defaults), plus ``meta.json``.

Patched to run without CUDA (nothing of the deformation or activation code is changed):
``diff_gaussian_rasterization`` (a stub that records its inputs), ``simple_knn._C.distCUDA2`` (a CPU
k-nearest-neighbour distance, only used by ``create_from_pcd`` before the Gaussians are replaced),
``open3d`` and ``torchvision`` (imported, unused on this path), ``tkinter`` if absent, and "cuda"
devices: ``Tensor.cuda``/``Module.cuda``/``Module.to("cuda")`` are no-ops and ``device="cuda"`` /
``map_location="cuda"`` in torch factory functions and ``torch.load`` become "cpu".
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import random
import shutil
import sys
import tempfile
import types
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from _checkout import require_commit  # (this folder, on sys.path when run as a script)

REPO = "hustvl/4DGaussians"
COMMIT = "843d5ac636c37e4b611242287754f3d4ed150144"
ROOT = Path(__file__).resolve().parents[2]

NUM_FRAMES, TRAIN_IDS, TEST_IDS = 20, (0, 1, 2), (3,)
FRAMES = (0, 5, 10, 19)  # first, two inner (10 / 20 = 0.5 exactly) and last timestep
FEW_FRAMES = (0, 19)  # for the coarse and no_do / no_dshs variants (kept small)
SH_DEGREE = 3
COARSE_ITER, FINE_ITER = 3000, 14000
NUM_COARSE, NUM_FINE = 160, 200
#: what a ``--configs`` file would hold (as ``arguments/dynerf/default.py`` with smaller planes):
#: every deformation head on (no_do / no_dshs False), a two-layer trunk.
CONFIG = {
    "ModelHiddenParams": {
        "kplanes_config": {"grid_dimensions": 2, "input_coordinate_dim": 4, "output_coordinate_dim": 4,
                           "resolution": [8, 8, 8, 10]},
        "multires": [1, 2], "defor_depth": 2, "net_width": 16, "no_do": False, "no_dshs": False,
        "no_ds": False, "empty_voxel": False, "static_mlp": False,
        "plane_tv_weight": 0.0002, "time_smoothness_weight": 0.001, "l1_time_planes": 0.0001,
    },
    "OptimizationParams": {"iterations": FINE_ITER, "coarse_iterations": COARSE_ITER, "batch_size": 1},
}


# ---------------------------------------------------------------------------------------------- checkout


def install_stubs() -> dict[str, list]:
    """Stub the CUDA extensions and unused imports; returns the rasterizer's record of calls."""
    calls: list[dict] = []

    class Rasterizer(nn.Module):  # diff_gaussian_rasterization.GaussianRasterizer, recording its inputs
        def __init__(self, raster_settings=None) -> None:
            super().__init__()

        def forward(self, **inputs):
            calls.append({k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
            n = inputs["means3D"].shape[0]
            return torch.zeros(3, 1, 1), torch.ones(n, dtype=torch.int32), torch.zeros(1, 1, 1)

    raster = types.ModuleType("diff_gaussian_rasterization")
    raster.GaussianRasterizationSettings = lambda **kw: types.SimpleNamespace(**kw)
    raster.GaussianRasterizer = Rasterizer
    knn = types.ModuleType("simple_knn._C")
    knn.distCUDA2 = lambda pts: torch.cdist(pts, pts).square().topk(4, largest=False).values[:, 1:].mean(1)
    modules = {"diff_gaussian_rasterization": raster, "simple_knn": types.ModuleType("simple_knn"),
               "simple_knn._C": knn, "open3d": types.ModuleType("open3d"),
               "torchvision": types.ModuleType("torchvision"),
               "torchvision.transforms": types.ModuleType("torchvision.transforms")}
    try:
        import tkinter  # noqa: F401 (scene/deformation.py does `from tkinter import W`)
    except ImportError:
        modules["tkinter"] = types.SimpleNamespace(W="w")
    sys.modules.update(modules)
    return {"calls": calls}


def cpu_instead_of_cuda() -> None:
    """Upstream hard-codes "cuda": make those devices the CPU (see the module doc)."""
    def on_cpu(fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            for key in ("device", "map_location"):
                if str(kwargs.get(key, "")).startswith("cuda"):
                    kwargs[key] = "cpu"
            return fn(*args, **kwargs)
        return wrapped

    for name in ("tensor", "zeros", "ones", "zeros_like", "ones_like", "empty", "full", "load"):
        setattr(torch, name, on_cpu(getattr(torch, name)))
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    module_to = nn.Module.to
    nn.Module.to = lambda self, *a, **k: self if a and str(a[0]).startswith("cuda") else module_to(self, *a, **k)


# ---------------------------------------------------------------------------------------------- model
def upstream_args(scene_dir: str, model_dir: str) -> tuple[Namespace, Any, Any, Any, Any]:
    """``args`` as upstream's train.py builds them (and its four parameter groups, to ``extract``
    from them): the groups' defaults, the command
    line ``-s SCENE -m MODEL --expname fixture``, ``save_iterations += [iterations]`` and the
    config merged with upstream's ``merge_hparams`` (train.py:399-418; mmcv's ``Config`` is
    replaced by the plain dict above)."""
    from arguments import ModelHiddenParams, ModelParams, OptimizationParams, PipelineParams
    from utils.params_utils import merge_hparams

    parser = argparse.ArgumentParser()
    lp, op, pp, hp = ModelParams(parser), OptimizationParams(parser), PipelineParams(parser), ModelHiddenParams(parser)
    # the extra options of train.py's parser, with its defaults (train.py:399-411)
    for name, default in (("--ip", "127.0.0.1"), ("--port", 6009), ("--debug_from", -1), ("--start_checkpoint", None),
                          ("--expname", ""), ("--configs", "")):
        parser.add_argument(name, type=type(default) if default is not None else str, default=default)
    for name in ("--detect_anomaly", "--quiet"):
        parser.add_argument(name, action="store_true", default=False)
    parser.add_argument("--test_iterations", nargs="+", type=int, default=[3000, 7000, 14000])
    parser.add_argument("--save_iterations", nargs="+", type=int, default=[14000, 20000, 30_000, 45000, 60000])
    parser.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[])
    args = parser.parse_args(["-s", scene_dir, "-m", model_dir, "--expname", "fixture", "--sh_degree", str(SH_DEGREE)])
    args.save_iterations.append(args.iterations)
    args = merge_hparams(args, copy.deepcopy(CONFIG))
    args.save_iterations = [COARSE_ITER, FINE_ITER]
    return args, lp, op, pp, hp


def randomise(gaussians, n: int, g: torch.Generator) -> None:
    """Random canonical Gaussians (``n`` rows) and random deformation weights and planes."""
    k = (SH_DEGREE + 1) ** 2
    rnd = lambda *s, std=1.0, mean=0.0: torch.randn(*s, generator=g) * std + mean  # noqa: E731
    gaussians._xyz = nn.Parameter(torch.rand(n, 3, generator=g) * 1.4 - 0.7)  # reaches past the aabb
    gaussians._features_dc = nn.Parameter(rnd(n, 1, 3, std=0.6))
    gaussians._features_rest = nn.Parameter(rnd(n, k - 1, 3, std=0.15))
    gaussians._scaling = nn.Parameter(rnd(n, 3, std=0.5, mean=-3.0))
    gaussians._rotation = nn.Parameter(rnd(n, 4))
    gaussians._opacity = nn.Parameter(rnd(n, 1, std=1.5))
    gaussians._deformation_table = torch.rand(n, generator=g) > 0.2  # (render ignores it)
    gaussians._deformation_accum = torch.rand(n, 3, generator=g)
    with torch.no_grad():
        for name, p in gaussians._deformation.named_parameters():
            if ".grid.grids." in name:
                time_plane = name.endswith((".2", ".4", ".5"))  # combinations of (x, y, z, t) holding t
                space = torch.rand(*p.shape, generator=g) * 0.8 + 0.1  # [0.1, 0.9]
                p.copy_(rnd(*p.shape, std=0.5, mean=1.0) if time_plane else space)
            elif name.endswith(".weight") and p.dim() == 2:
                p.copy_(rnd(*p.shape, std=0.3))
            elif name.endswith(".bias"):
                p.copy_(rnd(*p.shape, std=0.1))


def capture(render, view, gaussians, pipe, stage: str, calls: list) -> dict[str, np.ndarray]:
    bg = torch.zeros(3)
    with torch.no_grad():
        render(view, gaussians, pipe, bg, stage=stage, cam_type="PanopticSports")
    c = calls.pop()
    return {"means": c["means3D"], "scales": c["scales"], "rotations": c["rotations"],
            "opacities": c["opacities"][:, 0], "colors": c["shs"]}


def expected_for(render, views, gaussians, pipe, stage: str, calls: list,
                 frames: tuple[int, ...] = FRAMES) -> dict[str, np.ndarray]:
    per = [capture(render, views[f], gaussians, pipe, stage, calls) for f in frames]
    out = {k: np.stack([p[k].numpy() for p in per]).astype(np.float32) for k in per[0]}
    out["frames"] = np.array(frames, dtype=np.int64)
    out["times"] = np.array([views[f]["time"] for f in frames], dtype=np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    upstream, out = a.upstream.resolve(), a.out.resolve()
    require_commit(upstream, REPO, COMMIT)
    sys.path[:0] = [str(upstream), str(ROOT), str(ROOT / "tests")]
    state = install_stubs()
    cpu_instead_of_cuda()
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(6666)

    from gaussian_renderer import render
    from scene import GaussianModel, Scene
    from upstream_cases import write_scene

    work = Path(tempfile.mkdtemp(prefix="4dgs_fixture_"))
    cwd = os.getcwd()
    try:
        os.chdir(work)
        write_scene(work / "data" / "fixture", NUM_FRAMES, TRAIN_IDS, TEST_IDS)
        args, lp, op, pp, hp = upstream_args("data/fixture", "output/fixture")
        os.makedirs(args.model_path, exist_ok=True)
        with open(os.path.join(args.model_path, "cfg_args"), "w") as f:  # as train.py:324-325
            f.write(str(Namespace(**vars(args))))
        dataset, hyper, pipe = lp.extract(args), hp.extract(args), pp.extract(args)

        # training's Scene (sets the aabb from the point cloud), random coarse then fine stage
        gaussians = GaussianModel(dataset.sh_degree, hyper)
        scene = Scene(dataset, gaussians, load_coarse=None)
        randomise(gaussians, NUM_COARSE, g)
        scene.save(COARSE_ITER, "coarse")
        randomise(gaussians, NUM_FINE, g)
        scene.save(FINE_ITER, "fine")
        aabb = gaussians._deformation.deformation_net.grid.aabb.detach().clone()

        # render.py's loading, and upstream's render at training cameras of the chosen timesteps
        def views_of(sc) -> dict[int, dict]:
            cams = sc.getTrainCameras().dataset  # PanopticSports: timestep-major list of dicts
            return {f: cams[f * len(TRAIN_IDS)] for f in FRAMES}

        calls = state["calls"]
        fine = GaussianModel(dataset.sh_degree, hyper)
        fine_scene = Scene(dataset, fine, load_iteration=FINE_ITER, shuffle=False)
        views = views_of(fine_scene)
        results = {"expected.npz": expected_for(render, views, fine, pipe, "fine", calls)}

        coarse = GaussianModel(dataset.sh_degree, hyper)
        coarse._deformation.deformation_net.set_aabb(*aabb.tolist())
        folder = os.path.join(args.model_path, "point_cloud", f"coarse_iteration_{COARSE_ITER}")
        coarse.load_ply(os.path.join(folder, "point_cloud.ply"))
        coarse.load_model(folder)
        results["expected_coarse.npz"] = expected_for(render, views, coarse, pipe, "coarse", calls, FEW_FRAMES)

        static = copy.copy(hyper)
        static.no_do, static.no_dshs = True, True
        plain = GaussianModel(dataset.sh_degree, static)
        Scene(dataset, plain, load_iteration=FINE_ITER, shuffle=False)
        results["expected_no_do_dshs.npz"] = expected_for(render, views, plain, pipe, "fine", calls, FEW_FRAMES)

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(args.model_path, out / "model")
        for name, arrays in results.items():
            np.savez_compressed(out / name, **arrays)
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)

    e = results["expected.npz"]
    moved = np.abs(e["means"] - e["means"][:1]).max()
    meta = {
        "repo": REPO, "commit": COMMIT,
        "command": "python scripts/upstream_fixtures/4dgaussians.py --upstream /path/to/4DGaussians "
                   "--out tests/data/upstream/4dgaussians",
        "scene": {"num_frames": NUM_FRAMES, "train_ids": list(TRAIN_IDS), "test_ids": list(TEST_IDS),
                  "writer": "tests/upstream_cases.write_scene (panoptic layout = upstream's PanopticSports reader)"},
        "frames": list(FRAMES), "few_frames": list(FEW_FRAMES),
        "time": "upstream's PanopticSports reader gives timestep i of T the time i / T "
                "(scene/dataset_readers.py:549, readPanopticmeta), equal to ours; `times` in the npz files",
        "iterations": {"fine": FINE_ITER, "coarse": COARSE_ITER},
        "expected": {"expected.npz": "fine stage, model/cfg_args as saved",
                     "expected_coarse.npz": f"coarse_iteration_{COARSE_ITER} rendered with stage='coarse'",
                     "expected_no_do_dshs.npz": "fine stage rendered with no_do=True, no_dshs=True"},
        "gaussians": {"fine": NUM_FINE, "coarse": NUM_COARSE, "sh_degree": SH_DEGREE},
        "config": CONFIG,
        "patched": ["diff_gaussian_rasterization: stub recording render()'s inputs",
                    "simple_knn._C.distCUDA2: CPU 3-NN (create_from_pcd only; the Gaussians are then replaced)",
                    "open3d, torchvision (and tkinter if absent): empty modules",
                    "device='cuda' / map_location='cuda' -> cpu in torch factories and torch.load; "
                    "Tensor.cuda, Module.cuda, Module.to('cuda') are no-ops",
                    "mmcv Config of --configs: a dict merged with upstream's merge_hparams"],
        "max_position_motion": float(moved),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: max position motion over time {moved:.3f}")


if __name__ == "__main__":
    main()
