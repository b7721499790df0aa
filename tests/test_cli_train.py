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
