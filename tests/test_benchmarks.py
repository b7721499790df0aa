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


def test_multi_expert_benchmark_quick():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "multi_expert.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    lines = out.splitlines()
    # exact renders each expert with its own transmittance: equal to separate up to round-off
    sanity = [line for line in lines if line.startswith("exact vs separate")]
    assert len(sanity) == 1, out
    diffs = [float(part.split("=")[1]) for part in sanity[0].split(":", 1)[1].split(",")]
    assert len(diffs) == 2 and all(0 <= d < 1e-4 for d in diffs), out
    # table rows: K, N/expert, WxH, ref / sep / merged / exact ms, ref/exact, sep/exact
    rows = [r for r in (line.split() for line in lines) if len(r) == 9 and r[0].isdigit() and "x" in r[2]]
    assert len(rows) == 1, out
    for r in rows:
        assert int(r[0]) == 4 and int(r[1]) > 0, out
        ref, sep, merged, exact, ref_ratio, sep_ratio = map(float, r[3:])
        assert min(ref, sep, merged, exact) > 0, out
        # the printed ratios are the ratios of the times, up to the printed rounding (0.005)
        for num, ratio in ((ref, ref_ratio), (sep, sep_ratio)):
            lo, hi = (num - 0.005) / (exact + 0.005), (num + 0.005) / (exact - 0.005)
            assert lo - 0.005 <= ratio <= hi + 0.005, out


def test_lpips_benchmark_quick():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lpips.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    setups = [line for line in out.splitlines() if line.startswith("setup ")]
    assert [line.split()[1] for line in setups] == ["alex:", "vgg:"], out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["96x72"]]
    assert len(rows) == 1 and len(rows[0]) == 6, out
    ref, alex, vgg, alex_ratio, vgg_ratio = rows[0][1:]
    assert float(ref) > 0, out
    for value, ratio, setup in ((alex, alex_ratio, setups[0]), (vgg, vgg_ratio, setups[1])):
        if "n/a" in setup:  # weights not installed: said, and no number made up
            assert value == ratio == "n/a", out
        else:
            assert float(value) > 0 and abs(float(ratio) - float(value) / float(ref)) < 0.01 + 0.01 * float(ratio)
