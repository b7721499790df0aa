"""The benchmark scripts run (smoke): `--quick` prints a full table row per scene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_raster_benchmark_quick():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "raster.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["surface"], ["cloud"])]
    assert [r[0] for r in rows] == ["surface", "cloud"], out
    for r in rows:
        assert len(r) == 9, out
        fwd, bwd, total, coverage, rss = map(float, r[4:])
        assert fwd > 0 and bwd > 0 and abs(total - fwd - bwd) < 0.2
        assert 0.05 < coverage <= 1.0, "the benchmark scene should cover part of the image"
        assert rss > 0
