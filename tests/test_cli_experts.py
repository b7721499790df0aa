"""``moegs-bench experts check``: the contract table, exit 0 / 1 for a passing / failing expert,
one-line exit 2 for usage mistakes."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from moegs_bench.adapters.testing import CHECKS
from test_cli import assert_one_line_error, cli

CHECK_NAMES = [name for name, _, _ in CHECKS]

# An expert whose velocity never reaches the Gaussians: the gradients check must fail.
BROKEN_MODULE = textwrap.dedent('''
    import torch

    from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo, ParamGroup


    class Frozen(Expert):
        info = ExpertInfo(id="frozen", method="Frozen drift", paper="(test)", repo="-", description="broken")
        profiles = {"tiny": ExpertConfig(), "paper": ExpertConfig()}

        def __init__(self, config, init):
            super().__init__(config, init)
            self.add_standard_columns(init)
            self.table.add("velocity", torch.zeros(self.num_gaussians, 3))

        def extra_param_groups(self):
            return [ParamGroup("velocity", [self.table["velocity"]], 1e-3)]

        def gaussians_at(self, when):
            t = when.time if hasattr(when, "time") else float(when)
            tab = self.table
            means = tab["means"] + t * tab["velocity"].detach()  # the bug: no gradient reaches velocity
            return self.activated(means, tab["scales"], tab["quats"], tab["opacities"])
''')


@pytest.fixture
def plugin_path(tmp_path, monkeypatch) -> Path:
    (tmp_path / "frozen_expert.py").write_text(BROKEN_MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return tmp_path


def test_builtin_expert_passes_with_exit_0_json():
    proc = cli("experts", "check", "static", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["id"] == "static" and report["target"] == "moegs_bench.experts.static3dgs:Static3DGS"
    assert report["passed"] is True
    assert [c["name"] for c in report["checks"]] == CHECK_NAMES
    assert all(c["status"] == "pass" and c["detail"] for c in report["checks"])


def test_broken_plugin_fails_with_exit_1_and_the_reason_in_the_table(plugin_path):
    proc = cli("experts", "check", "--plugin", "frozen_expert:Frozen")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr
    assert "Expert contract: frozen (frozen_expert:Frozen)" in out
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in out.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    assert rows == {**dict.fromkeys(CHECK_NAMES, "pass"), "gradients": "fail"}
    assert "no gradient reaches group" in out and "'velocity'" in out
    assert "frozen: 1 of 8 checks did not pass: gradients" in out


def test_unknown_id_is_a_one_line_usage_error():
    assert_one_line_error(cli("experts", "check", "nope"), "unknown expert 'nope'", "4dgs", "static")


def test_nothing_to_check_is_a_one_line_usage_error():
    assert_one_line_error(cli("experts", "check"), "give an expert ID or --plugin MODULE:CLASS")


def test_unimportable_plugin_is_a_one_line_usage_error(tmp_path):
    assert_one_line_error(cli("experts", "check", "--plugin", "no_such_module_xyz:Thing", cwd=tmp_path),
                          "no_such_module_xyz", "cannot be imported")
