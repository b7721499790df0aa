"""Make the E-D3DGS import fixture by running upstream's own code (JeongminB/E-D3DGS, pinned below).

    python scripts/upstream_fixtures/e-d3dgs.py --upstream /path/to/E-D3DGS --out tests/data/upstream/e-d3dgs

It builds a small random upstream model (``GaussianModel`` + ``deform_network``, every deformation
term switched on and non-zero), writes it with upstream's saving code into ``<out>/model/`` in
upstream's layout (``cfg_args`` as ``train.py`` writes it, ``point_cloud/iteration_N/`` by
``Scene.save``), loads it back with upstream's loaders and renders it with upstream's
``gaussian_renderer.render`` at a few (frame, camera) pairs, capturing the Gaussians that reach the
rasterizer. Those go to ``<out>/expected.npz``; ``<out>/meta.json`` says what the fixture assumes.
A second, smaller model with upstream's other switches flipped goes to ``<out>/switches/``.

What cannot run on a CPU is patched, minimally (see :func:`install_stubs`): the CUDA extensions
(``simple_knn``, ``diff_gaussian_rasterization``: the rasterizer is replaced by one that records
its inputs), ``tkinter`` (imported for nothing by ``scene/deformation.py``), the dataset readers
``scene/__init__.py`` imports (unused by ``Scene.save``; they pull kornia / torchvision / natsort),
and every ``.cuda()`` / ``device="cuda"`` / ``map_location="cuda"``, which become the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import sys
import types
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _checkout import require_commit  # (this folder, on sys.path when run as a script)

REPO = "JeongminB/E-D3DGS"
PINNED = "a68543ed76e6627df2b8ec07a450c4632eb86f94"
ITERATION = 700  # inside the annealing ramps and the coarse-to-fine growth (see HIDDEN)
NUM_GAUSSIANS = 200
DURATION = 50  # scene/__init__.py: the technicolor loader reads 50 frames, time = j / 50
TRAIN_IDS = (1, 4, 7, 12)  # camNN folders (utils/camera_utils.py: cam_no = int(folder[3:]))
TEST_ID = 10  # scene/dataset_readers.py: cam10 is Technicolor's test camera
OFFSETS = {1: -0.031, 4: 0.012, 7: 0.027, 12: 0.044}  # learned time offsets of the train cameras
# (frame, camera) pairs rendered; the test camera goes through cam_no=None like render.py
QUERIES = ((0, 1), (0, TEST_ID), (12, 4), (25, 7), (25, TEST_ID), (49, 12), (49, TEST_ID))
# A technicolor-style config (arguments/technicolor/default.py) made small, with every term on:
# position / scale / rotation / opacity / colour offsets, annealing, coarse-to-fine rows.
HIDDEN = dict(
    defor_depth=2, net_width=16, temporal_embedding_dim=12, gaussian_embedding_dim=6,
    min_embeddings=5, max_embeddings=25, total_num_frames=DURATION,
    no_ds=False, no_dr=False, no_do=False, no_dc=False,
    use_coarse_temporal_embedding=True, no_c2f_temporal_embedding=False,
    c2f_temporal_iter=2000, deform_from_iter=200, use_anneal=True, zero_temporal=False,
)
# A second, smaller model (<out>/switches/) with upstream's other switches flipped, the technicolor
# defaults among them: no annealing, no coarse-to-fine, the coarse decoder on the fine rows, depth
# 0, no rotation / opacity / colour offsets, no learned offsets (offsets_lr=0).
SWITCHES = dict(
    name="switches", iteration=3000, num_gaussians=60, offsets={},
    queries=((0, 4), (25, TEST_ID), (49, 12)),
    hidden=dict(HIDDEN, defor_depth=0, use_anneal=False, no_c2f_temporal_embedding=True,
                use_coarse_temporal_embedding=False, no_dr=True, no_do=True, no_dc=True),
)
MAIN = dict(name="", iteration=ITERATION, num_gaussians=NUM_GAUSSIANS, offsets=OFFSETS, queries=QUERIES,
            hidden=HIDDEN)


# ---------------------------------------------------------------------------------------------- patches
class Recorder:
    """Stands in for ``diff_gaussian_rasterization.GaussianRasterizer``: records what it is given."""

    last: dict[str, torch.Tensor] = {}

    def __init__(self, raster_settings: object) -> None:
        self.settings = raster_settings

    def __call__(self, **inputs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        Recorder.last = {k: v.detach().clone() for k, v in inputs.items() if v is not None}
        n = inputs["means3D"].shape[0]
        return torch.zeros(3, 1, 1), torch.ones(n)


def _on_cpu(fn):
    def wrapped(*args, **kwargs):
        for key in ("device", "map_location"):
            if kwargs.get(key) == "cuda":
                kwargs[key] = "cpu"
        return fn(*args, **kwargs)
    return wrapped


def _to_cpu(fn):
    def wrapped(self, *args, **kwargs):
        if args and args[0] == "cuda":
            args = ("cpu", *args[1:])
        return fn(self, *args, **kwargs)
    return wrapped


def install_stubs(checkout: Path) -> None:
    """The CPU patches listed in the module docstring; then the checkout goes on ``sys.path``."""
    def module(name: str, **attrs: object) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m

    module("tkinter", W="w")  # scene/deformation.py: `from tkinter import W` (unused)
    module("simple_knn")
    module("simple_knn._C", distCUDA2=None)  # only create_from_pcd uses it; not called
    module("diff_gaussian_rasterization", GaussianRasterizationSettings=lambda **kw: Namespace(**kw),
           GaussianRasterizer=Recorder)
    # scene/__init__.py imports the dataset readers (kornia, torchvision, natsort); Scene.save uses none
    module("scene.dataset_readers", sceneLoadTypeCallbacks={})
    module("utils.camera_utils", camera_to_JSON=None, cameraList_from_camInfosv2=None,
           cameraList_from_camInfosHyper=None)
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.to = _to_cpu(nn.Module.to)  # type: ignore[method-assign]
    for name in ("tensor", "zeros", "zeros_like", "ones", "empty", "load"):
        setattr(torch, name, _on_cpu(getattr(torch, name)))
    sys.path.insert(0, str(checkout))


# ---------------------------------------------------------------------------------------------- model
def train_args(checkout: Path, variant: dict) -> Namespace:
    """The argument namespace ``train.py`` builds and writes to ``cfg_args``: its parser, the
    technicolor config merged in as ``merge_hparams`` does, then the variant's hidden settings."""
    from arguments import ModelHiddenParams, ModelParams, OptimizationParams, PipelineParams
    from utils.params_utils import merge_hparams

    parser = argparse.ArgumentParser(description="Training script parameters")
    ModelParams(parser), OptimizationParams(parser), PipelineParams(parser), ModelHiddenParams(parser)
    parser.add_argument('--ip', type=str, default="127.0.0.1")
    parser.add_argument('--port', type=int, default=6009)
    parser.add_argument('--debug_from', type=int, default=-1)
    parser.add_argument('--detect_anomaly', action='store_true', default=False)
    parser.add_argument("--test_iterations", nargs="+", type=int, default=[i * 500 for i in range(0, 120)])
    parser.add_argument("--save_iterations", nargs="+", type=int,
                        default=[3000, 5000, 7000, 14000, 20000, 30000, 45000, 60000, 80000, 100000, 120000])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[])
    parser.add_argument("--start_checkpoint", type=str, default=None)
    parser.add_argument("--expname", type=str, default="")
    parser.add_argument("--configs", type=str, default="")
    config = "arguments/technicolor/default.py"
    args = parser.parse_args(["-s", "data/technicolor/Birthday", "--model_path", "model", "--expname",
                              "technicolor/fixture", "--configs", config,
                              "--save_iterations", str(variant["iteration"])])
    args.save_iterations.append(args.iterations)
    merge_hparams(args, runpy.run_path(str(checkout / config)))
    merge_hparams(args, {"ModelHiddenParams": variant["hidden"],
                         "OptimizationParams": {"iterations": variant["iteration"]}})
    return args


def random_model(hyper: object, sh_degree: int, variant: dict) -> object:
    """Upstream's GaussianModel with random, realistic parameters and random decoder weights."""
    from scene.gaussian_model import GaussianModel

    g = GaussianModel(sh_degree, hyper)
    n, k = variant["num_gaussians"], (sh_degree + 1) ** 2
    p = lambda t: nn.Parameter(t.float())  # noqa: E731
    g._xyz = p(torch.rand(n, 3) * 2 - 1)
    g._scaling = p(torch.log(torch.rand(n, 3) * 0.08 + 0.01))
    g._rotation = p(torch.randn(n, 4))
    g._opacity = p(torch.randn(n, 1) * 1.5)
    g._features_dc = p(torch.randn(n, 1, 3) * 0.5)
    g._features_rest = p(torch.randn(n, k - 1, 3) * 0.1)
    g._embedding = p(torch.randn(n, hyper.gaussian_embedding_dim) * 0.5)
    g.active_sh_degree = sh_degree
    net = g._deformation
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.3)
                m.bias.normal_(0.0, 0.1)
        net.weight.normal_(0.0, 0.5)
        net.offsets.zero_()
        for cam, off in variant["offsets"].items():
            net.offsets[cam, 0] = off
    return g


def captured(render, g: object, pipe: object, hyper: object, iteration: int, frame: int,
             cam: int) -> dict[str, np.ndarray]:
    """The Gaussians upstream's render hands the rasterizer at ``frame`` seen from camera ``cam``:
    a train camera passes its number (train.py), the test camera none (render.py)."""
    view = Namespace(FoVx=1.0, FoVy=0.8, image_height=18, image_width=24, world_view_transform=torch.eye(4),
                     full_proj_transform=torch.eye(4), camera_center=torch.zeros(3), time=frame / DURATION,
                     cam_no=cam, frame_no=frame)
    render(view, g, pipe, torch.zeros(3), cam_no=None if cam == TEST_ID else cam, iter=iteration,
           num_down_emb_c=hyper.min_embeddings, num_down_emb_f=hyper.min_embeddings)
    r = Recorder.last
    return {"means": r["means3D"], "scales": r["scales"], "rotations": r["rotations"],
            "opacities": r["opacities"][:, 0], "colors": r["shs"]}


def make(checkout: Path, out: Path, variant: dict) -> None:
    """Save ``variant``'s random model under ``out/model`` with upstream's code, render it back and
    write ``out/expected.npz``. Runs in ``out`` (train.py writes model_path as given, relative)."""
    from arguments import ModelHiddenParams, ModelParams, PipelineParams
    from gaussian_renderer import render
    from scene import Scene
    from scene.gaussian_model import GaussianModel

    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)
    args = train_args(checkout, variant)
    dummy = argparse.ArgumentParser()
    dataset, hyper, pipe = ModelParams(dummy).extract(args), ModelHiddenParams(dummy).extract(args), \
        PipelineParams(dummy).extract(args)
    os.makedirs(args.model_path, exist_ok=True)
    with open(os.path.join(args.model_path, "cfg_args"), "w") as f:  # train.py prepare_output_and_logger
        f.write(str(Namespace(**vars(args))))
    iteration = variant["iteration"]
    Scene.save(Namespace(model_path=args.model_path, gaussians=random_model(hyper, dataset.sh_degree, variant)),
               iteration)

    # read back as Scene.__init__ does for a loaded iteration, then render
    loaded = GaussianModel(dataset.sh_degree, hyper)
    folder = os.path.join(args.model_path, "point_cloud", f"iteration_{iteration}")
    loaded.load_ply(os.path.join(folder, "point_cloud.ply"))
    loaded.load_model(folder)
    with torch.no_grad():
        rows = [captured(render, loaded, pipe, hyper, iteration, f, c) for f, c in variant["queries"]]
    expected = {k: np.stack([r[k].numpy() for r in rows]).astype(np.float32) for k in rows[0]}
    expected["frames"] = np.array([f for f, _ in variant["queries"]], np.int32)
    expected["cameras"] = np.array([c for _, c in variant["queries"]], np.int32)
    np.savez_compressed(out / "expected.npz", **expected)
    print(f"wrote {out}: {len(rows)} queries, {variant['num_gaussians']} Gaussians, iteration {iteration}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, required=True, help="a checkout of JeongminB/E-D3DGS at the pinned commit")
    ap.add_argument("--out", type=Path, required=True)
    opts = ap.parse_args()
    checkout, out = opts.upstream.resolve(), opts.out.resolve()
    require_commit(checkout, REPO, PINNED)
    install_stubs(checkout)
    for variant in (MAIN, SWITCHES):
        make(checkout, out / variant["name"], variant)
    meta = {
        "upstream": {"repo": REPO, "commit": PINNED},
        "command": f"python scripts/upstream_fixtures/e-d3dgs.py --upstream {checkout.name} --out "
                   "tests/data/upstream/e-d3dgs",
        "scene": {"num_frames": DURATION, "train_ids": list(TRAIN_IDS), "test_ids": [TEST_ID]},
        "models": {
            "model": {"iteration": MAIN["iteration"], "num_gaussians": MAIN["num_gaussians"],
                      "expected": "expected.npz", "offsets": {str(k): v for k, v in OFFSETS.items()},
                      "settings": "every deformation term on, annealing and coarse-to-fine mid-way"},
            "switches/model": {"iteration": SWITCHES["iteration"], "num_gaussians": SWITCHES["num_gaussians"],
                               "expected": "switches/expected.npz", "offsets": "all zero",
                               "settings": "use_anneal=False, no_c2f_temporal_embedding=True, "
                                           "use_coarse_temporal_embedding=False, defor_depth=0, no_dr, no_do, no_dc"},
        },
        "time": f"upstream timestamp = frame / {DURATION} (technicolor reader, scene/dataset_readers.py), read at "
                "timestamp + offsets[cam_no]; the test camera (cam_no=None, as render.py) at timestamp + the mean "
                "of the non-zero offsets (0 when there are none)",
        "queries": "expected.npz row i: frames[i] seen from camera cameras[i] (upstream camera number = our "
                   "camera_id); train cameras pass cam_no (train.py), the test camera cam_no=None (render.py)",
        "render": "gaussian_renderer.render(view, model, pipe, bg, cam_no, iter=<saved iteration>, num_down_emb_c = "
                  "num_down_emb_f = min_embeddings); arrays are what it passes the rasterizer (activated scales, "
                  "normalised rotations w x y z, sigmoid opacities, SH [N, 16, 3] DC first)",
        "patched": "CPU: tkinter, simple_knn._C and diff_gaussian_rasterization stubbed (the rasterizer records its "
                   "inputs); scene.dataset_readers and utils.camera_utils stubbed so scene/__init__.py imports "
                   "without kornia/torchvision/natsort (Scene.save does not use them); .cuda() and "
                   "device/map_location='cuda' mapped to the CPU",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
