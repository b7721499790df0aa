"""Make the Ex4DGS import fixture with upstream's own code (juno181/Ex4DGS at the pinned commit).

    python scripts/upstream_fixtures/ex4dgs.py --upstream /path/to/Ex4DGS --out tests/data/upstream/ex4dgs

It builds a small model the way upstream's ``train.py`` does (``CGaussianModel`` from a point cloud,
``training_setup``, ``expand_duration`` as the progressive training grows the duration, dynamic
Gaussians made by ``extract_dynamic_points_from_static``), randomises every parameter so that every
deformation term is clearly non-zero (drifts, keyframes, keyframe rotations, temporal-opacity
centres in both orders and widths), saves it with upstream's own ``save_ply``, ``capture`` +
``torch.save`` (``train.py``'s checkpoint) and ``cfg_args`` as ``train.py`` writes it, then loads it
back the way ``render.py`` does (``CGaussianModel(...)`` + ``restore`` from ``chkpnt<N>.pth``) and
records what ``gaussian_renderer.render`` hands the rasterizer at a few frames.

What is patched to run on a CPU (nothing of the deformation code itself):
- ``simple_knn._C.distCUDA2`` (CUDA): replaced by the same quantity in torch (mean squared distance
  to the 3 nearest neighbours), only used for the initial scales, which are randomised anyway;
- ``diff_gaussian_rasterization_df`` (CUDA): a stand-in rasterizer that records its inputs;
- ``cv2`` (imported by ``utils/general_utils.py`` for image loading only): an empty module;
- the ``scene`` package is registered without running ``scene/__init__.py`` (its dataset loaders
  need joblib/natsort/kornia); ``scene.c_gaussian_model`` is imported from the checkout as is;
- ``Tensor.cuda()``, ``device="cuda"`` in tensor factories, ``torch.cuda.synchronize`` and
  ``empty_cache``: CPU / no-ops.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import torch

from _checkout import require_commit  # (this folder, on sys.path when run as a script)

REPO = "juno181/Ex4DGS"
COMMIT = "7fac64997164fde64732c80261e56adf66ca14df"

NUM_FRAMES = 20  # the scene: frames 0..19 (upstream timestamps), cameras 0..3 train, 4 test
TRAIN_IDS, TEST_IDS = (0, 1, 2, 3), (4,)
FRAMES = (0, 7, 13, 19)  # first, two middle ones (one on a keyframe: 7 + time_shift 8 = 15), last
ITERATION = 3000
NUM_POINTS = 200
EXTRACT_PERCENTILE = 0.7  # ~30% of the visible static Gaussians become dynamic at each extraction


# ---------------------------------------------------------------------------------------------- CPU patches
def _cpu_device(fn):
    def wrapped(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)
    return wrapped


class _Recorder:
    """Stand-in for ``diff_gaussian_rasterization_df.GaussianRasterizer``: keeps what ``render``
    passes and returns placeholders of the shapes ``render`` unpacks."""

    last: dict = {}

    def __init__(self, raster_settings) -> None:
        self.settings = raster_settings

    def __call__(self, **inputs):
        _Recorder.last = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        n = inputs["means3D"].shape[0]
        h, w = int(self.settings.image_height), int(self.settings.image_width)
        img = torch.zeros(3, h, w)
        return img, torch.ones(n, dtype=torch.int32), torch.zeros(1, h, w), torch.zeros(2, h, w), \
            torch.zeros(1, h, w), torch.zeros(1, h, w)


def _dist_cuda2(points: torch.Tensor) -> torch.Tensor:  # what simple_knn computes: mean sq. dist of 3-NN
    d = torch.cdist(points, points).square()
    d.fill_diagonal_(float("inf"))
    return d.topk(3, largest=False).values.mean(1)


def install_stubs(upstream: Path) -> None:
    sys.path.insert(0, str(upstream))
    sys.modules["cv2"] = types.ModuleType("cv2")
    knn = types.ModuleType("simple_knn")
    knn_c = types.ModuleType("simple_knn._C")
    knn_c.distCUDA2 = _dist_cuda2
    knn._C = knn_c
    sys.modules.update({"simple_knn": knn, "simple_knn._C": knn_c})
    raster = types.ModuleType("diff_gaussian_rasterization_df")
    raster.GaussianRasterizationSettings = lambda **kw: types.SimpleNamespace(**kw)
    raster.GaussianRasterizer = _Recorder
    sys.modules["diff_gaussian_rasterization_df"] = raster
    scene_pkg = types.ModuleType("scene")  # without scene/__init__.py (dataset loaders)
    scene_pkg.__path__ = [str(upstream / "scene")]
    sys.modules["scene"] = scene_pkg
    torch.Tensor.cuda = lambda self, *a, **k: self
    for name in ("zeros", "ones", "zeros_like", "ones_like", "tensor", "arange", "empty", "full", "rand", "randn"):
        setattr(torch, name, _cpu_device(getattr(torch, name)))
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.empty_cache = lambda *a, **k: None


# ---------------------------------------------------------------------------------------------- model
def upstream_args(model_path: Path):
    """The arguments ``train.py`` parses (its ``__main__`` parser: ModelParams, OptimizationParams,
    PipelineParams and its own flags), with the fixture's settings given on the command line."""
    from arguments import ModelParams, OptimizationParams, PipelineParams

    parser = argparse.ArgumentParser(description="Training script parameters")
    lp, op, pp = ModelParams(parser), OptimizationParams(parser), PipelineParams(parser)
    # train.py's own flags (train.py:377-386)
    parser.add_argument("--ip", type=str, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6009)
    parser.add_argument("--debug_from", type=int, default=-1)
    parser.add_argument("--detect_anomaly", action="store_true", default=False)
    parser.add_argument("--test_iterations", nargs="+", type=int, default=[7000_000])
    parser.add_argument("--save_iterations", nargs="+", type=int, default=[30_000, 40_000])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[30_000, 40_000])
    parser.add_argument("--start_checkpoint", type=str, default=None)
    parser.add_argument("--configpath", type=str, default="None")
    args = parser.parse_args(["--model_path", str(model_path), "--source_path", "/data/fixture_scene",
                              "--iterations", str(ITERATION), "--save_iterations", str(ITERATION),
                              "--checkpoint_iterations", str(ITERATION), "--sh_degree", "3",
                              "--time_interval", "5", "--time_pad", "3", "--start_duration", "5",
                              "--extract_percentile", str(EXTRACT_PERCENTILE)])
    args.save_iterations.append(args.iterations)  # as train.py's __main__ and training() do
    args.checkpoint_iterations.append(args.iterations)
    return args, lp.extract(args), op.extract(args), pp.extract(args)


def build_model(dataset, opt, g: torch.Generator):
    from scene.c_gaussian_model import CGaussianModel
    from utils.graphics_utils import BasicPointCloud

    gaussians = CGaussianModel(dataset.sh_degree, dataset.start_duration, dataset.time_interval, dataset.time_pad,
                               interp_type=dataset.interp_type, rot_interp_type=dataset.rot_interp_type,
                               time_pad_type=dataset.time_pad_type, var_pad=dataset.var_pad,
                               kernel_size=dataset.kernel_size)
    pts = (torch.rand(NUM_POINTS, 3, generator=g) - 0.5).numpy()
    pcd = BasicPointCloud(points=pts, colors=torch.rand(NUM_POINTS, 3, generator=g).numpy(), normals=np.zeros_like(pts),
                          times=np.zeros((NUM_POINTS, 1)))
    # Scene: cameras_extent = getNerfppNorm(...)["radius"], a numpy float64 (np.max(dist) * 1.1)
    extent = np.max(np.array([3.0, 3.0])) * 1.1
    gaussians.create_from_pcd(pcd, extent)
    gaussians.training_setup(opt)
    dataset.duration = NUM_FRAMES  # Scene: args.duration = max(unique timestamps) when -1
    randomise_static(gaussians, g)

    # progressive training (train.py:74-75, 257-281): extract at the current length, grow, repeat
    sample_len = dataset.start_duration
    gaussians.expand_duration(dataset.start_duration)
    cam_pos = torch.tensor([[0.0, 0.5, 3.0]])
    for step in range(2):
        optimizer_step(gaussians)
        all_visible = torch.ones(gaussians._xyz.shape[0], dtype=torch.bool)
        gaussians.xyz_error_min_timestamp = torch.randint(0, int(sample_len), (gaussians._xyz.shape[0], 1),
                                                          generator=g).float()
        gaussians.extract_dynamic_points_from_static(cam_pos, sample_len, all_visible, extent,
                                                     percentile=opt.extract_percentile, max_dur=sample_len)
        while sample_len < dataset.duration + gaussians.time_shift:
            sample_len = min(dataset.duration + gaussians.time_shift,
                             int(dataset.time_interval * dataset.progressive_step) + sample_len)
            optimizer_step(gaussians)
            gaussians.expand_duration(min(dataset.duration + gaussians.time_shift, sample_len))
            if step == 0 and sample_len >= dataset.duration // 2:
                break
    for _ in range(dataset.sh_degree):  # train.py: one SH band per 1000 iterations
        gaussians.oneupSHdegree()
    randomise_dynamic(gaussians, g)
    return gaussians


def optimizer_step(gs) -> None:
    """A training step with zero gradients (no parameter moves). Upstream's
    ``replace_tensor_to_optimizer`` (used by ``expand_duration``) only swaps in the new tensors when
    the optimizer already holds state for them, as it always does during training."""
    for group in gs.optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    gs.optimizer.step()
    gs.optimizer.zero_grad(set_to_none=True)


def _set(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.data = value.to(param.dtype).reshape(param.shape).contiguous()


def randomise_static(gs, g: torch.Generator) -> None:
    n = gs._xyz.shape[0]
    _set(gs._xyz_disp, torch.randn(n, 3, generator=g) * 0.2)
    _set(gs._rotation, torch.randn(n, 4, generator=g))
    _set(gs._scaling, torch.randn(n, 3, generator=g) * 0.5 - 3.0)
    _set(gs._opacity, torch.randn(n, 1, generator=g) * 1.5)
    _set(gs._features_dc, torch.randn(gs._features_dc.shape, generator=g) * 0.5)
    _set(gs._features_rest, torch.randn(gs._features_rest.shape, generator=g) * 0.2)


def randomise_dynamic(gs, g: torch.Generator) -> None:
    n, k = gs._xyz_motion.shape[:2]
    lo, hi = gs.time_shift / gs.interval, (gs.time_shift + NUM_FRAMES - 1) / gs.interval  # the scene, keyframe units
    _set(gs._xyz_motion, gs._xyz_motion + torch.randn(n, k, 3, generator=g).cumsum(1) * 0.05)
    _set(gs._rotation_motion, gs._rotation_motion + torch.randn(n, k, 4, generator=g) * 0.3)
    _set(gs._scaling_motion, torch.randn(n, 3, generator=g) * 0.5 - 3.0)
    _set(gs._opacity_motion, torch.randn(n, 1, generator=g) * 1.5)
    centre = lo - 0.3 + torch.rand(n, 2, 1, generator=g) * (hi - lo + 0.6)  # either order, some outside the scene
    _set(gs._opacity_duration_center, centre)
    _set(gs._opacity_duration_var, torch.randn(n, 2, 1, generator=g) * 0.7 - 0.5)
    _set(gs._features_dc_motion, torch.randn(gs._features_dc_motion.shape, generator=g) * 0.5)
    _set(gs._features_rest_motion, torch.randn(gs._features_rest_motion.shape, generator=g) * 0.2)


# ---------------------------------------------------------------------------------------------- expected
def render_inputs(gaussians, pipe, timestamp: int) -> dict[str, torch.Tensor]:
    """What ``gaussian_renderer.render`` passes the rasterizer at ``timestamp``."""
    from gaussian_renderer import render

    cam = types.SimpleNamespace(timestamp=timestamp, FoVx=1.0, FoVy=0.8, image_height=18, image_width=24,
                                world_view_transform=torch.eye(4), full_proj_transform=torch.eye(4),
                                camera_center=torch.tensor([0.0, 0.5, 3.0]))
    render(cam, gaussians, pipe, torch.ones(3), near=0.2, far=300.0)
    return _Recorder.last


def expected_arrays(gaussians, pipe) -> dict[str, np.ndarray]:
    out: dict[str, list] = {k: [] for k in ("means", "scales", "rotations", "opacities", "colors")}
    for f in FRAMES:
        got = render_inputs(gaussians, pipe, f)
        out["means"].append(got["means3D"])
        out["scales"].append(got["scales"])
        out["rotations"].append(torch.nn.functional.normalize(got["rotations"], dim=-1))  # (the rasterizer does)
        out["opacities"].append(got["opacities"][:, 0])
        out["colors"].append(got["shs"])
    arrays = {k: torch.stack(v).numpy().astype(np.float32) for k, v in out.items()}
    arrays["frames"] = np.asarray(FRAMES, np.float32)
    return arrays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True, help="a checkout of juno181/Ex4DGS at the pinned commit")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    upstream = a.upstream.resolve()
    require_commit(upstream, REPO, COMMIT)
    install_stubs(upstream)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    model_path = a.out / "model"
    model_path.mkdir(parents=True, exist_ok=True)
    args, dataset, opt, pipe = upstream_args(model_path)
    gaussians = build_model(dataset, opt, g)
    args.duration = dataset.duration  # train.py:51, before cfg_args is written
    with open(os.path.join(args.model_path, "cfg_args"), "w") as cfg_log_f:  # train.py:60-61
        cfg_log_f.write(str(argparse.Namespace(**vars(args))))
    gaussians.save_ply(os.path.join(args.model_path, f"point_cloud/iteration_{ITERATION}", "point_cloud.ply"))
    torch.save((gaussians.capture(), ITERATION), args.model_path + "/chkpnt" + str(ITERATION) + ".pth")

    # render.py: CGaussianModel(sh_degree, duration, time_interval, time_pad, interp_type, time_pad_type),
    # then Scene(..., opt=opt) restores chkpnt<N>.pth
    from scene.c_gaussian_model import CGaussianModel

    loaded = CGaussianModel(dataset.sh_degree, dataset.duration, dataset.time_interval, dataset.time_pad,
                            interp_type=dataset.interp_type, time_pad_type=dataset.time_pad_type)
    model_args, _ = torch.load(os.path.join(args.model_path, f"chkpnt{ITERATION}.pth"), weights_only=False)
    loaded.restore(model_args, opt)
    arrays = expected_arrays(loaded, pipe)
    np.savez_compressed(a.out / "expected.npz", **arrays)

    meta = {
        "upstream": {"repo": REPO, "commit": COMMIT},
        "command": f"python scripts/upstream_fixtures/ex4dgs.py --upstream <checkout> --out {a.out}",
        "scene": {"num_frames": NUM_FRAMES, "train_ids": list(TRAIN_IDS), "test_ids": list(TEST_IDS)},
        "time": "upstream timestamp = integer frame index (dataset_readers: frame - start_timestamp); "
                "ours t = frame / num_frames",
        "model": {"static": int(loaded._xyz.shape[0]), "dynamic": int(loaded._xyz_motion.shape[0]),
                  "keyframes": int(loaded._xyz_motion.shape[1]), "duration": int(loaded.duration),
                  "interval": int(loaded.interval), "time_shift": int(loaded.time_shift),
                  "iteration": ITERATION, "sh_degree": int(loaded.max_sh_degree)},
        "expected": "what gaussian_renderer.render passes the rasterizer (means3D, scales, rotations "
                    "normalised, opacities, shs [N, 16, 3]), static rows then dynamic rows",
        "patched": ["simple_knn._C.distCUDA2 -> torch 3-NN mean squared distance",
                    "diff_gaussian_rasterization_df -> a recorder of the rasterizer's inputs",
                    "cv2 -> empty module", "scene package registered without scene/__init__.py",
                    "Tensor.cuda / device='cuda' / torch.cuda.synchronize, empty_cache -> CPU no-ops"],
    }
    (a.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["model"]))
    print("frames", FRAMES, "opacity window values (dynamic rows) min/max:",
          float(arrays["opacities"][:, loaded._xyz.shape[0]:].min()), float(arrays["opacities"].max()))


if __name__ == "__main__":
    main()
