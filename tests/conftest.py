"""Fixtures shared by test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from moegs_bench.data.synthetic import generate
from test_cli import cli

SMALL = {"width": 32, "height": 24, "train_cameras": 3}


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(scene, finished ``moegs-bench run`` folder of static + stg, cache): a tiny mixture run that
    ``prune`` and ``distill`` derive from (they only read it)."""
    base = tmp_path_factory.mktemp("finished-run")
    scene = base / "kitchen"
    generate(scene, "kitchen", frames=6, **SMALL)
    proc = cli("run", "--experts", "static,stg", "--expert-iterations", "10", "--router-iterations", "5",
               "--scene", str(scene), "--out", str(base / "runs"), "--name", "mix", "--cache", str(base / "cache"),
               "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr
    return scene, base / "runs" / "mix", base / "cache"


@pytest.fixture(scope="session")
def sweep_scene(tmp_path_factory) -> Path:
    """A tiny kitchen (32x24, 4 frames, 3 training cameras) the sweep tests run their points on."""
    path = tmp_path_factory.mktemp("sweep-scene") / "kitchen"
    generate(path, "kitchen", frames=4, **SMALL)
    return path
