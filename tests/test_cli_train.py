"""``moegs-bench train-expert`` end to end, its one-line errors, and the README's example expert."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from moegs_bench.data.synthetic import generate
from test_cli import assert_one_line_error, cli

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"width": 32, "height": 24, "train_cameras": 3}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene") / "kitchen"
    generate(root, "kitchen", frames=10, **SMALL)
    return root


@pytest.fixture(scope="module")
def short_scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("short") / "kitchen"
    generate(root, "kitchen", frames=3, **SMALL)
    return root


def _readme_example(folder: Path) -> Path:
    """Write the README's example expert (the ```python block under "Adding an expert")."""
    text = README.read_text()
    section = text[text.index("### Adding an expert"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert code.startswith("# my_drift.py")
    (folder / "my_drift.py").write_text(code)
    return folder


def test_train_expert_writes_a_run_and_reports_a_rerun(scene, tmp_path):
    out = tmp_path / "run"
    args = ["train-expert", "--expert", "stg", "--scene", str(scene), "--out", str(out), "--iterations", "4",
            "--no-progress", "--cache", str(tmp_path / "cache")]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "test PSNR" in proc.stdout and "Traceback" not in proc.stderr
    record = json.loads((out / "results.json").read_text())
    assert record["schema"] == "moegs-bench/results" and record["name"] == "stg"
    assert record["config"]["train"]["iterations"] == 4 and record["config"]["profile"] == "tiny"
    assert (out / "expert.pt").is_file() and len(list((out / "renders" / "test").glob("*.png"))) == 10
    again = cli(*args)
    assert again.returncode == 0 and "finished run of stg found" in again.stdout


def test_unknown_expert_lists_the_valid_ids(tmp_path):
    assert_one_line_error(cli("train-expert", "--expert", "nope", "--out", str(tmp_path / "o")),
                          "unknown expert 'nope'", "4dgs", "e-d3dgs", "ex4dgs", "stg")


def test_too_few_frames_for_keyframes(short_scene, tmp_path):
    proc = cli("train-expert", "--expert", "ex4dgs", "--scene", str(short_scene), "--out", str(tmp_path / "o"),
               "--cache", str(tmp_path / "cache"))
    assert_one_line_error(proc, "ex4dgs", "3 frame(s)", "at least 10")


def test_folder_of_another_expert_is_refused(scene, tmp_path):
    out = tmp_path / "run"
    common = ["--scene", str(scene), "--out", str(out), "--iterations", "2", "--no-progress", "--cache",
              str(tmp_path / "cache")]
    assert cli("train-expert", "--expert", "static", *common).returncode == 0
    before = (out / "expert.pt").read_bytes()
    assert_one_line_error(cli("train-expert", "--expert", "stg", *common), "different run", "expert")
    assert (out / "expert.pt").read_bytes() == before


def test_unknown_synthetic_scene(tmp_path):
    assert_one_line_error(cli("train-expert", "--expert", "stg", "--scene", "synthetic:attic", "--out",
                              str(tmp_path / "o"), "--cache", str(tmp_path / "cache")),
                          "unknown synthetic scene 'attic'", "kitchen")


def test_readme_example_expert_trains_as_a_plugin(scene, tmp_path, monkeypatch):
    mod_dir = _readme_example(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mod_dir), os.environ.get("PYTHONPATH", "")]))
    listed = cli("experts", "list", "--plugin", "my_drift:Drift", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rows["drift"]["source"] == "plugin" and rows["drift"]["available"]
    proc = cli("train-expert", "--plugin", "my_drift:Drift", "--expert", "drift", "--scene", str(scene),
               "--out", str(tmp_path / "drift"), "--iterations", "3", "--no-progress",
               "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "drift" / "results.json").read_text())
    assert record["name"] == "drift" and record["num_gaussians"] > 0


BROKEN_EXPERT = '''
from dataclasses import replace

from moegs_bench.adapters.base import ExpertInfo
from moegs_bench.experts.static3dgs import Static3DGS


class Broken(Static3DGS):
    """Static 3DGS whose gaussians_at drops a column of the means: a bug in an expert's code."""

    info = ExpertInfo(id="broken", method="Broken", paper="-", repo="-", description="a wrong shape")

    def gaussians_at(self, camera):
        state = super().gaussians_at(camera)
        return replace(state, means=state.means[:, :2])
'''


def test_an_internal_error_is_a_bug_report_not_a_user_error(scene, tmp_path, monkeypatch):
    """A check that fails on values the program computed (here an expert's state during training)
    is a bug: exit 1, a short message, the traceback in a log file in the run folder."""
    (tmp_path / "broken_expert.py").write_text(BROKEN_EXPERT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    proc = cli("train-expert", "--plugin", "broken_expert:Broken", "--expert", "broken", "--scene", str(scene),
               "--out", str(out), "--iterations", "2", "--no-progress", "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("Error: internal error (a bug in moegs-bench") and "GaussianState.means" in lines[0]
    logs = sorted(out.glob("error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in " ".join(proc.stderr.split())
    text = logs[0].read_text()
    assert "Traceback" in text and "gaussians_at" in text and "train-expert" in text
    # the same mistake in a user's input (a config key) stays one line, exit 2
    assert_one_line_error(cli("train-expert", "--plugin", "broken_expert:Broken", "--expert", "broken",
                              "--out", str(out), "--set", "experts.broken.train.lambda_dssim=nan"),
                          "experts.broken.train.lambda_dssim: expected a finite number, got nan")


def test_set_and_shortcuts_reach_the_expert_config(scene, tmp_path):
    out = tmp_path / "run"
    proc = cli("train-expert", "--expert", "stg", "--scene", str(scene), "--out", str(out), "--iterations", "40",
               "--set", "experts.stg.train.iterations=3", "--set", "experts.stg.train.lambda_dssim=0.5",
               "--downscale", "2", "--frames", "1:4", "--seed", "2", "--no-progress", "--cache", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    identity = json.loads((out / "run.json").read_text())
    train = identity["config"]["train"]
    assert train["iterations"] == 3 and train["lambda_dssim"] == 0.5  # --set wins over --iterations
    from moegs_bench.adapters.registry import Registry

    stretched = Registry.discover().get("stg").profile("tiny").with_iterations(40).train
    assert train["densify_until"] == stretched.densify_until != 3  # --iterations 40 stretched the schedule
    assert identity["seed"] == 2 and identity["scene"].endswith(";downscale=2;frames=1:4")
    record = json.loads((out / "results.json").read_text())
    assert record["scene"] == identity["scene"]
    assert len(list((out / "renders" / "test").glob("*.png"))) == 3  # one test camera, frames 1, 2, 3


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--set", "train.iterations=3"], ["train.iterations: unknown key", "experts.stg.train.iterations"]),
        (["--set", "router.temperature=0.1"], ["router.temperature: unknown key"]),
        (["--set", "experts.stg.train.iterations=many"], ["experts.stg.train.iterations: expected an integer"]),
        (["--frames", "4"], ["--frames", "START:END"]),
        (["--frames", "4:2"], ["--frames (scene.frames)", "START < END"]),
        (["--downscale", "0"], ["--downscale"]),
    ],
)
def test_bad_settings_exit_2_and_write_nothing(tmp_path, args, needles):
    proc = cli("train-expert", "--expert", "stg", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "cache"),
               *args)
    assert_one_line_error(proc, *needles)
    assert not any(tmp_path.iterdir())
