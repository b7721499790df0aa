"""An imported upstream model in use: the folder ``moegs-bench import`` writes (provenance, rerun,
refusals that leave nothing behind) is taken by ``run --expert-run`` to train a router, and the run
is pruned and its imported expert distilled."""

from __future__ import annotations

import hashlib
import json
import shutil

from test_cli import assert_one_line_error, cli, cli_here
from upstream_cases import FIXTURES, copy_fixture, write_scene

FOURDGS = FIXTURES / "4dgaussians"


def _scene(tmp_path) -> str:
    meta = json.loads((FOURDGS / "meta.json").read_text())["scene"]
    return write_scene(tmp_path / "scene", meta["num_frames"], tuple(meta["train_ids"]), tuple(meta["test_ids"]))


def test_an_imported_expert_trains_a_router(tmp_path):
    spec, cache, out = _scene(tmp_path), str(tmp_path / "cache"), tmp_path / "imported"
    args = ("import", "4dgaussians", str(FOURDGS / "model"), "--scene", spec, "--out", str(out), "--cache", cache,
            "--lpips", "none")
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    upstream = json.loads((out / "upstream.json").read_text())
    assert upstream["format"] == "4dgaussians" and upstream["repo"] == "hustvl/4DGaussians"
    assert upstream["iteration"] == 14000
    for rel, digest in upstream["files"].items():  # every file read, with its hash
        assert hashlib.sha256((FOURDGS / "model" / rel).read_bytes()).hexdigest() == digest
    assert {"cfg_args", "point_cloud/iteration_14000/point_cloud.ply",
            "point_cloud/iteration_14000/deformation.pth"} <= set(upstream["files"])
    record = json.loads((out / "results.json").read_text())
    assert record["name"] == "4dgs" and record["config"]["profile"] == "import:4dgaussians"
    assert record["extra"]["upstream"]["commit"] == upstream["commit"] and record["num_gaussians"] == 200
    again = cli(*args)
    assert again.returncode == 0 and "this import is finished" in again.stdout

    proc = cli("run", "--experts", "4dgs,static", "--expert-run", f"4dgs={out}", "--scene", spec,
               "--expert-iterations", "10", "--router-iterations", "5", "--out", str(tmp_path / "runs"), "--name",
               "mix", "--cache", cache, "--lpips", "none", "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "runs" / "mix"
    assert json.loads((run / "experts.json").read_text())["4dgs"]["folder"] == str(out)
    mixture = json.loads((run / "results" / "mixture.json").read_text())
    assert mixture["metrics"]["psnr"] > 0 and "baselines" in mixture["extra"]

    # the run derives like any other: pruned, and the imported expert distilled (continued from its
    # checkpoint, whose step is where its schedule ended: 3000 coarse + 14000 fine steps)
    proc = cli_here("prune", str(run), "--ratio", "0.5", "--views", "2", "--cache", cache, "--lpips", "none",
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr
    pruned = json.loads((tmp_path / "runs" / "mix_prune-gate-0.5" / "results" / "mixture.json").read_text())
    assert pruned["extra"]["gaussians_after"]["4dgs"] == 100
    proc = cli_here("distill", str(run), "--student", "4dgs", "--steps", "2", "--no-baseline", "--cache", cache,
                    "--lpips", "none", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    student = json.loads((tmp_path / "runs" / "mix_distill-4dgs-lam0.5-2" / "results.json").read_text())
    assert student["extra"]["distill"]["start_step"] == 17000 and student["num_gaussians"] >= 200


def test_refused_imports_write_nothing(tmp_path):
    spec, out = _scene(tmp_path), tmp_path / "out"
    model = copy_fixture("4dgaussians", tmp_path)
    shutil.rmtree(model / "point_cloud")
    assert_one_line_error(cli_here("import", "4dgaussians", str(model), "--scene", spec, "--out", str(out), "--cache",
                              str(tmp_path / "cache")), str(model), "point_cloud/iteration_N")
    assert_one_line_error(cli_here("import", "4dgaussians", str(FOURDGS / "model"), "--scene", spec, "--out", str(out),
                              "--iteration", "7", "--cache", str(tmp_path / "cache")), "--iteration 7", "14000")
    assert not out.exists()
