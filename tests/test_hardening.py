"""What a hostile but realistic user does to run folders, caches and datasets: a dataset replaced
in place, files left by a killed process, two processes at once, folders of another kind, corrupt
state, unwritable places and a full disk. Every case: one line and exit 2 for a user's mistake
(exit 1 for a full disk), nothing written on refusal, nothing lost."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from moegs_bench.app.run import check_expert_run
from moegs_bench.data import DatasetError, load_scene
from moegs_bench.data.state import dataset_state
from moegs_bench.data.synthetic import generate
from moegs_bench.locks import FolderBusyError, folder_lock
from moegs_bench.run_folder import RunFolderError
from moegs_bench.training.checkpoint import load_checkpoint
from oslimits import cli_command, mounts_unavailable, read_only, run_in_namespace, small_disk
from test_cli import ENTRY, assert_one_line_error, cli, folder_files

SMALL = {"width": 32, "height": 24, "train_cameras": 3}
TRAIN = ("--expert", "stg", "--iterations", "2", "--no-progress")
RUN = ("--experts", "static,stg", "--expert-iterations", "2", "--router-iterations", "2", "--no-progress")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene") / "kitchen"
    generate(root, "kitchen", frames=6, **SMALL)
    return root


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory) -> Path:
    """A finished train-expert folder (copy it before changing it)."""
    base = tmp_path_factory.mktemp("trained")
    proc = cli("train-expert", *TRAIN, "--scene", str(scene), "--out", str(base / "out"), "--cache", str(base / "c"))
    assert proc.returncode == 0, proc.stderr
    return base / "out"


@pytest.fixture(scope="module")
def mixture_runs(scene, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two `run` commands started together on one empty cache: (run a, run b, cache)."""
    base = tmp_path_factory.mktemp("mixture")
    cache = base / "cache"
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", ENTRY, "run", *RUN, "--scene", str(scene), "--out",
                               str(base / "runs"), "--name", name, "--cache", str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name in ("a", "b")]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, (out, err)
    return base / "runs" / "a", base / "runs" / "b", cache


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# ---------------------------------------------------------------------------- stale dataset caches


def _first_image(root: Path) -> tuple[str, Path]:
    """The key and file of the first training image of a Panoptic-layout scene."""
    meta = json.loads((root / "train_meta.json").read_text())
    return f"cam{meta['cam_id'][0][0]:02d}/{0:06d}", root / "ims" / meta["fn"][0][0]


def _replace(path: Path, pixels: np.ndarray) -> None:
    """Write ``pixels`` over ``path`` as a later edit would (its time moved on by 5 s, whatever the
    file system's timestamp resolution)."""
    before = path.stat().st_mtime_ns
    iio.imwrite(path, pixels)
    os.utime(path, ns=(before + 5_000_000_000, before + 5_000_000_000))


def test_a_dataset_replaced_in_place_is_decoded_again(scene, tmp_path):
    root, cache = _copy(scene, tmp_path / "kitchen"), tmp_path / "images"
    key, path = _first_image(root)
    first = load_scene(root, cache_dir=cache)
    frame = next(f for f in first.train if f.key == key)
    old = iio.imread(path)[..., :3]
    assert np.array_equal(first.image(frame).mul(255).round().byte().numpy(), old)  # decoded and cached

    _replace(path, 255 - old)
    second = load_scene(root, cache_dir=cache)
    assert second.state != first.state
    got = second.image(next(f for f in second.train if f.key == key))
    assert np.array_equal(got.mul(255).round().byte().numpy(), 255 - old)  # the new file, not the cache
    (tag,) = list(cache.iterdir())
    assert [p.name for p in tag.iterdir()] == [second.state.short]  # the old state's images are gone

    _replace(path, np.zeros((12, 16, 3), np.uint8))  # another size: a dataset error, not a shape traceback
    with pytest.raises(DatasetError, match=rf"{path}: 16x12 pixels, but the metadata says w=32, h=24"):
        third = load_scene(root, cache_dir=cache)
        third.image(next(f for f in third.train if f.key == key))


def test_the_dataset_state_counts_every_source_file(scene):
    loaded = load_scene(scene)
    files = [p for p in scene.rglob("*") if p.is_file()]  # the generated scene holds only sources
    state = loaded.state
    assert (state.files, state.bytes) == (len(files), sum(p.stat().st_size for p in files))
    assert state == dataset_state(scene, loaded.data.sources)
    with_absent = dataset_state(scene, [*loaded.data.sources, scene / "absent.png"])
    assert with_absent.files == state.files and with_absent.digest != state.digest  # absent counts as absent


def test_a_result_names_its_dataset_state_and_a_changed_dataset_is_another_run(scene, tmp_path):
    root = _copy(scene, tmp_path / "kitchen")
    args = ("train-expert", *TRAIN, "--scene", str(root), "--out", str(tmp_path / "out"), "--cache",
            str(tmp_path / "c"))
    assert cli(*args).returncode == 0
    record = json.loads((tmp_path / "out" / "results.json").read_text())
    assert record["extra"]["dataset"] == load_scene(root).state.to_dict()

    _, path = _first_image(root)
    _replace(path, 255 - iio.imread(path)[..., :3])
    assert_one_line_error(cli(*args), str(tmp_path / "out"), "holds a different run (differs in dataset)")


def test_an_expert_run_trained_on_other_files_is_refused(scene, tmp_path):
    folder = tmp_path / "expert"
    folder.mkdir()
    state = load_scene(scene).state
    identity = {"kind": "moegs-bench/expert-run", "expert": "stg", "scene": "panoptic:/x", "dataset": "0" * 64}
    (folder / "run.json").write_text(json.dumps(identity))
    (folder / "expert.pt").write_bytes(b"")
    (folder / "results.json").write_text("{}")
    with pytest.raises(RunFolderError, match="trained on other files of panoptic:/x"):
        check_expert_run(folder, "stg", "panoptic:/x", state)
    (folder / "run.json").write_text(json.dumps({**identity, "dataset": state.digest}))
    assert check_expert_run(folder, "stg", "panoptic:/x", state)["dataset"] == state.digest


# ---------------------------------------------------------------------------- leftovers of a killed process


def test_temporary_files_of_a_killed_process_are_removed_when_the_folder_is_claimed(trained, scene, tmp_path):
    out = _copy(trained, tmp_path / "out")
    (out / "checkpoints").mkdir()
    stale = [out / "checkpoints" / ".latest-k2j3h4g5.pt",  # (the naming before temporaries were marked .tmp)
             out / "checkpoints" / ".latest-abcd_123.tmp.pt", out / ".results-zzzzzzzz.tmp.json",
             out / "renders" / "test" / ".cam00__000001-a1b2c3d4.tmp.png"]
    for p in stale:
        p.write_bytes(b"half a file")
    kept = [out / "notes.txt", out / ".hidden-file"]
    for p in kept:
        p.write_text("the user's")
    proc = cli("train-expert", *TRAIN, "--scene", str(scene), "--out", str(out), "--cache", str(tmp_path / "c"))
    assert proc.returncode == 0 and "finished run of stg found" in proc.stdout, proc.stderr
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "the user's" for p in kept)
    assert not (out / "checkpoints").exists()  # no empty checkpoints/ folder after a finished training


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_shared_caches_drop_the_temporaries_of_killed_processes_but_not_of_live_ones(scene, tmp_path):
    from moegs_bench.data.synthetic import ensure

    cache = tmp_path / "images"
    first = load_scene(scene, cache_dir=cache)
    first.image(first.train[0])  # the state's folder exists
    state_dir = cache / next(cache.iterdir()).name / first.state.short / "x1"
    old, fresh = state_dir / ".cam01__000001-k2j3h4g5.tmp.npy", state_dir / ".cam01__000002-a1b2c3d4.tmp.npy"
    for p in (old, fresh):
        p.write_bytes(b"half")
    _age(old, 2 * 3600)
    again = load_scene(scene, cache_dir=cache)
    again.image(again.train[1])
    assert not old.exists() and fresh.exists()  # (a process may still be writing the fresh one)

    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    from moegs_bench.data.synthetic.generate import cache_key

    name = cache_key("kitchen", frames=2, width=8, height=8, train_cameras=2)
    dead, live = synthetic / f".{name}.tmp-1-deadbeef", synthetic / f".{name}.tmp-2-0badf00d"
    for p in (dead, live):
        (p / "ims").mkdir(parents=True)
    _age(dead, 2 * 3600)
    ensure("kitchen", synthetic, frames=2, width=8, height=8, train_cameras=2)
    assert not dead.exists() and live.exists() and (synthetic / name / "train_meta.json").is_file()


def test_a_finished_training_leaves_no_checkpoints_folder(trained):
    assert (trained / "expert.pt").is_file() and not (trained / "checkpoints").exists()
    assert not [p for p in trained.rglob(".*") if p.name != ".lock"]


# ---------------------------------------------------------------------------- two processes at once

HOLD = """
import sys, time
from pathlib import Path
from moegs_bench.locks import folder_lock
with folder_lock(Path(sys.argv[1]), wait=False):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_folder_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    folder = tmp_path / "entry"
    holder = _holder(folder, 60)
    with pytest.raises(FolderBusyError, match=rf"another process \(pid {holder.pid}\) is working"):
        with folder_lock(folder, wait=False):
            pass
    holder.send_signal(signal.SIGKILL)  # a crash releases it
    holder.wait()
    with folder_lock(folder, wait=False):
        pass

    holder = _holder(folder, 1.5)
    told: list[str] = []
    t0 = time.perf_counter()
    with folder_lock(folder, wait=True, on_wait=told.append, poll_seconds=0.05):
        waited = time.perf_counter() - t0  # granted once the holder's 1.5 s were over
    holder.wait()
    assert waited > 1.0 and len(told) == 1 and "waiting for it to finish" in told[0]


def test_two_runs_that_need_the_same_expert_train_it_once(mixture_runs):
    a, b, cache = mixture_runs
    for expert in ("static", "stg"):
        # one training: both runs copied the same record (a second training would have its own times)
        assert (a / "results" / f"{expert}.json").read_bytes() == (b / "results" / f"{expert}.json").read_bytes()
    assert json.loads((a / "experts.json").read_text()).keys() == {"static", "stg"}
    entries = sorted((cache / "experts").glob("*/*/results.json"))
    assert len(entries) == 2


@pytest.mark.parametrize("command", ["run", "train-expert"])
def test_a_run_folder_in_use_is_refused_and_left_alone(command, scene, tmp_path):
    folder = tmp_path / "runs" / "busy"
    holder = _holder(folder, 120)
    try:
        args = {"run": ("run", *RUN, "--out", str(tmp_path / "runs"), "--name", "busy"),
                "train-expert": ("train-expert", *TRAIN, "--out", str(folder))}[command]
        proc = cli(*args, "--scene", str(scene), "--cache", str(tmp_path / "c"))
        assert_one_line_error(proc, str(folder), f"another process (pid {holder.pid}) is working")
        assert [p.name for p in folder.iterdir()] == [".lock"]  # no run.json
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))
def test_a_finished_expert_run_in_a_read_only_folder_can_be_used(trained, mixture_runs, scene, tmp_path):
    shared = _copy(trained, tmp_path / "shared" / "stg")
    cache = _copy(mixture_runs[2], tmp_path / "cache")  # (holds the static expert)
    command = cli_command("run", *RUN, "--scene", str(scene), "--out", str(tmp_path / "runs"), "--cache", str(cache),
                          "--expert-run", f"stg={shared}")
    proc = run_in_namespace(read_only(tmp_path / "shared"), command)
    assert proc.returncode == 0, proc.stderr
    (run,) = list((tmp_path / "runs").iterdir())
    assert json.loads((run / "experts.json").read_text())["stg"]["folder"] == str(shared)
    assert (run / "results" / "stg.json").read_bytes() == (trained / "results.json").read_bytes()


# ---------------------------------------------------------------------------- folders of another kind, corrupt state


def test_force_never_turns_a_folder_into_another_kind(trained, mixture_runs, scene, tmp_path):
    mixture = _copy(mixture_runs[0], tmp_path / "runs" / "a")
    before = folder_files(mixture)
    proc = cli("train-expert", *TRAIN, "--scene", str(scene), "--out", str(mixture), "--force", "--cache",
               str(tmp_path / "c"))
    assert_one_line_error(proc, "holds a mixture run", "--force only redoes a run of the same kind")
    assert folder_files(mixture) == before

    expert = _copy(trained, tmp_path / "runs" / "e")
    before = folder_files(expert)
    proc = cli("run", *RUN, "--scene", str(scene), "--out", str(tmp_path / "runs"), "--name", "e", "--force",
               "--cache", str(mixture_runs[2]))
    assert_one_line_error(proc, "holds a train-expert run", "--force only redoes a run of the same kind")
    assert folder_files(expert) == before


def test_a_corrupt_run_json_is_refused_and_replaced_with_force(trained, scene, tmp_path):
    out = _copy(trained, tmp_path / "out")
    (out / "run.json").write_text('{"expert": "stg", "sce')
    args = ("train-expert", *TRAIN, "--scene", str(scene), "--out", str(out), "--cache", str(tmp_path / "c"))
    assert_one_line_error(cli(*args), str(out / "run.json"), "unreadable", "--force")
    proc = cli(*args, "--force")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["expert"] == "stg" and (out / "results.json").is_file()


def test_a_corrupt_cached_expert_has_a_way_out_and_a_refused_run_leaves_nothing(mixture_runs, scene, tmp_path):
    cache = _copy(mixture_runs[2], tmp_path / "cache")
    (entry,) = [p.parent for p in (cache / "experts").glob("*/stg-*/expert.pt")]
    (entry / "expert.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    args = ("run", *RUN, "--scene", str(scene), "--out", str(tmp_path / "runs"), "--name", "new", "--cache",
            str(cache))
    assert_one_line_error(cli(*args), str(entry), "--retrain-experts")
    assert not (tmp_path / "runs").exists()  # refused: no run.json stub, no folder
    proc = cli(*args, "--retrain-experts")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(entry / "expert.pt").finished


# ---------------------------------------------------------------------------- unwritable places, a full disk


@pytest.mark.parametrize("command", ["run", "train-expert", "data synth"])
def test_an_output_that_is_a_file_is_refused_before_any_work(command, scene, tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    args = {"run": ("run", *RUN, "--scene", str(scene), "--out", str(target), "--cache", str(tmp_path / "c")),
            "train-expert": ("train-expert", *TRAIN, "--scene", str(scene), "--out", str(target), "--cache",
                             str(tmp_path / "c")),
            "data synth": ("data", "synth", str(target / "scene"))}[command]
    assert_one_line_error(cli(*args), str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and target.read_text() == "mine"


@pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))
@pytest.mark.parametrize("case", ["run --out", "train-expert --out", "data synth", "run --cache"])
def test_a_read_only_place_is_one_line_before_any_work(case, scene, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    rw = tmp_path / "rw"
    args = {
        "run --out": ("run", *RUN, "--scene", str(scene), "--out", str(ro / "runs"), "--cache", str(rw / "c")),
        "train-expert --out": ("train-expert", *TRAIN, "--scene", str(scene), "--out", str(ro / "out"), "--cache",
                               str(rw / "c")),
        "data synth": ("data", "synth", str(ro / "scene")),
        "run --cache": ("run", *RUN, "--scene", str(scene), "--out", str(rw / "runs"), "--cache", str(ro / "c")),
    }[case]
    proc = run_in_namespace(read_only(ro), cli_command(*args))
    option = case.split()[-1] if case != "data synth" else "OUT"
    assert_one_line_error(proc, option, str(ro), "cannot write there", "Read-only file system")
    assert not rw.exists() and not any(ro.iterdir())


@pytest.mark.skipif(mounts_unavailable() is not None, reason=str(mounts_unavailable()))
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(scene, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    # 2 MiB hold the run's first periodic checkpoint (about 1.4 MB) but not a second one beside it
    command = cli_command("train-expert", "--expert", "stg", "--iterations", "50", "--set",
                          "experts.stg.train.checkpoint_every=1", "--no-progress", "--scene", str(scene), "--out",
                          str(out), "--cache", str(tmp_path / "c"))
    check = (f"{shlex.quote(sys.executable)} -c 'import sys; from moegs_bench.training.checkpoint import "
             f"load_checkpoint; print(\"STEP\", load_checkpoint(sys.argv[1]).step)' "
             f"{shlex.quote(str(out / 'checkpoints' / 'latest.pt'))}")
    listing = f"find {shlex.quote(str(disk))} -name '.*' -type f"
    proc = run_in_namespace(small_disk(disk, "2m"), f"{command}; echo RC=$?; {check}; {listing}")
    assert "RC=1" in proc.stdout and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "checkpoint is intact" in errors[0]
    step = int(proc.stdout.split("STEP ")[1].split()[0])
    assert step >= 1  # the last good checkpoint loads
    assert ".tmp" not in proc.stdout  # no temporary file left behind (only .lock)
