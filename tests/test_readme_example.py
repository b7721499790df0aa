"""The README's "Adding an expert" example, taken from the README itself: the example module passes
``moegs-bench experts check --plugin my_drift:Drift`` (the command as the README writes it) and
the README's Python ``check_expert`` snippet."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from test_cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("### Adding an expert")
    return text[start:text.index("\n## ", start)]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), re.S)


@pytest.fixture
def example(tmp_path, monkeypatch) -> Path:
    """The README's example module written as tmp_path/my_drift.py, importable in- and out of process."""
    module = _blocks("python")[0]
    assert module.startswith("# my_drift.py")
    (tmp_path / "my_drift.py").write_text(module)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_drift", None)


def test_readme_check_command_passes_on_the_example(example):
    commands = [line.split("#")[0].strip() for block in _blocks("bash") for line in block.splitlines()
                if line.startswith("moegs-bench experts check")]
    assert commands == ["moegs-bench experts check --plugin my_drift:Drift"]
    proc = cli(*shlex.split(commands[0])[1:], cwd=example)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Expert contract: drift (my_drift:Drift)" in proc.stdout
    assert "drift: all 8 checks passed" in proc.stdout


def test_readme_python_check_passes_on_the_example(example):
    snippets = [code for code in _blocks("python") if "check_expert(" in code]
    assert len(snippets) == 1
    exec(compile(snippets[0], "README.md (check_expert example)", "exec"), {})  # asserts report.passed
