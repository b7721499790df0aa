"""The expert registry (built-ins, entry points, ``--plugin``) and ``moegs-bench experts list``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moegs_bench.adapters.base import ExpertError
from moegs_bench.adapters.registry import (
    BUILTIN_EXPERTS,
    ENTRY_POINT_GROUP,
    ExpertSpec,
    Registry,
    load_target,
    parse_expert_list,
)
from moegs_bench.cli import app
from moegs_bench.experts.static3dgs import Static3DGS

from test_cli import assert_one_line_error, cli

BUILTIN_IDS = ["4dgs", "e-d3dgs", "ex4dgs", "stg", "static"]

EXPERT_MODULE = '''
from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo


class {cls}(Expert):
    info = ExpertInfo(id={id!r}, method="Fake method", paper="Nobody et al., 2099", repo="example/fake",
                      description="a test expert")
    profiles = {{"tiny": ExpertConfig(), "paper": ExpertConfig()}}

    def gaussians_at(self, when):
        raise NotImplementedError


class NotAnExpert:
    info = None
'''


def write_module(folder: Path, module: str, *, cls: str = "FakeExpert", expert_id: str = "fake") -> None:
    (folder / f"{module}.py").write_text(EXPERT_MODULE.format(cls=cls, id=expert_id))


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch) -> Path:
    """tmp_path on sys.path; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in sys.modules[name].__file__:
            del sys.modules[name]


def fake_distribution(folder: Path, entry_points: dict[str, str], *, name: str = "fakeexpert") -> None:
    """An installed distribution by the format's own rules: NAME-VERSION.dist-info/ with METADATA
    and entry_points.txt (what pip writes), next to the module it points to."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


def invoke_json(*args: str) -> tuple[list[dict], str]:
    result = CliRunner().invoke(app, ["experts", "list", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


# ---------------------------------------------------------------------------------- built-ins


def test_builtin_specs_in_order():
    registry = Registry.discover()
    builtins = [s for s in registry.specs() if s.source == "built-in"]
    assert [s.id for s in builtins] == BUILTIN_IDS == list(BUILTIN_EXPERTS)
    assert registry.ids()[:5] == BUILTIN_IDS
    assert ExpertSpec("static", "moegs_bench.experts.static3dgs:Static3DGS", "built-in") in builtins


def test_static_is_available():
    registry = Registry.discover()
    assert registry.status("static") == (True, "ok", Static3DGS)
    assert registry.get("static") is Static3DGS


def test_builtin_listing_json_and_table():
    rows, _ = invoke_json()
    by_id = {r["id"]: r for r in rows}
    assert list(by_id)[:5] == BUILTIN_IDS
    static = by_id["static"]
    assert static["available"] is True and static["source"] == "built-in"
    assert static["paper"] == "Kerbl et al., SIGGRAPH 2023"
    assert static["repo"] == "graphdeco-inria/gaussian-splatting"
    assert {"tiny", "paper"} <= set(static["profiles"])
    for r in rows:
        assert isinstance(r["available"], bool) and isinstance(r["detail"], str) and r["detail"]

    result = CliRunner().invoke(app, ["experts", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if "│ static" in ln)
    for word in ("Kerbl et al., SIGGRAPH 2023", "graphdeco-inria/gaussian-splatting", "built-in", "yes", "tiny"):
        assert word in line, line


def test_unavailable_expert_reports_the_reason():
    registry = Registry([ExpertSpec("ghost", "no_such_module_xyz:Ghost", "plugin")])
    available, detail, cls = registry.status("ghost")
    assert (available, cls) == (False, None)
    assert "module 'no_such_module_xyz' cannot be imported" in detail
    with pytest.raises(ExpertError, match="expert 'ghost' is unavailable: module 'no_such_module_xyz'"):
        registry.get("ghost")


def test_unknown_id_lists_valid_ids():
    registry = Registry.discover()
    with pytest.raises(ExpertError, match="unknown expert 'nope'") as info:
        registry.get("nope")
    for expert_id in BUILTIN_IDS:
        assert expert_id in str(info.value)


# --------------------------------------------------------------------------- parse_expert_list


def test_parse_expert_list():
    registry = Registry.discover()
    assert parse_expert_list("4dgs,e-d3dgs", registry) == ["4dgs", "e-d3dgs"]
    assert parse_expert_list(" static , stg ", registry) == ["static", "stg"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("4dgs,,stg", "empty item"),
        ("4dgs,", "empty item"),
        ("", "comma-separated"),
        ("static,4dgs,static", "expert 'static' is listed twice"),
        ("4dgs,nerf", "unknown expert 'nerf'; valid ids: 4dgs, e-d3dgs, ex4dgs, stg, static"),
    ],
)
def test_parse_expert_list_errors(text, needle):
    with pytest.raises(ExpertError) as info:
        parse_expert_list(text, Registry.discover())
    assert needle in str(info.value)


# ------------------------------------------------------------------------------------ plugins


def test_plugin_is_listed(plugin_dir):
    write_module(plugin_dir, "my_plugin_mod", cls="MyExpert", expert_id="mine")
    registry = Registry.discover(["my_plugin_mod:MyExpert"])
    assert registry.ids()[-1] == "mine"
    assert registry.spec("mine") == ExpertSpec("mine", "my_plugin_mod:MyExpert", "plugin")
    assert registry.get("mine").info.paper == "Nobody et al., 2099"

    rows, _ = invoke_json("--plugin", "my_plugin_mod:MyExpert")
    mine = rows[-1]
    assert (mine["id"], mine["source"], mine["available"]) == ("mine", "plugin", True)
    assert mine["repo"] == "example/fake" and mine["profiles"] == ["tiny", "paper"]


def test_load_target_errors(plugin_dir):
    write_module(plugin_dir, "my_broken_mod")
    (plugin_dir / "my_raising_mod.py").write_text("raise RuntimeError('boom')\n")
    cases = {
        "x": "--plugin 'x': expected module:Class",
        "a:b:c": "expected module:Class",
        "no_such_mod_xyz:Bar": "module 'no_such_mod_xyz' cannot be imported: no such module",
        "my_raising_mod:X": "module 'my_raising_mod' cannot be imported: RuntimeError: boom",
        "my_broken_mod:Missing": "has no attribute 'Missing'",
        "my_broken_mod:NotAnExpert": "'my_broken_mod:NotAnExpert' is not an Expert subclass",
        "json:JSONDecoder": "'json:JSONDecoder' is not an Expert subclass",
        "moegs_bench.adapters.base:Expert": "no info",
    }
    for target, needle in cases.items():
        with pytest.raises(ExpertError) as info:
            load_target(target)
        assert needle in str(info.value), (target, str(info.value))
    assert load_target("my_broken_mod:FakeExpert").info.id == "fake"


def test_plugin_clash_with_builtin_is_refused(plugin_dir):
    write_module(plugin_dir, "my_static_mod", expert_id="static")
    with pytest.raises(ExpertError, match="id 'static' is a built-in expert"):
        Registry.discover(["my_static_mod:FakeExpert"])


@pytest.mark.parametrize(
    "plugin,needle",
    [
        ("no_such_module_xyz:Bar", "module 'no_such_module_xyz' cannot be imported"),
        ("justamodule", "--plugin 'justamodule': expected module:Class"),
        ("my_cli_mod:NotAnExpert", "'my_cli_mod:NotAnExpert' is not an Expert subclass"),
    ],
)
def test_broken_plugin_cli_is_one_line_exit_2(tmp_path, monkeypatch, plugin, needle):
    write_module(tmp_path, "my_cli_mod")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    assert_one_line_error(cli("experts", "list", "--plugin", plugin), needle)


# ------------------------------------------------------------------------------- entry points


def test_entry_point_distribution_is_found(plugin_dir):
    write_module(plugin_dir, "fake_expert_mod")
    fake_distribution(plugin_dir, {"fake": "fake_expert_mod:FakeExpert"})
    registry = Registry.discover()
    assert registry.spec("fake") == ExpertSpec("fake", "fake_expert_mod:FakeExpert", "entry point (fakeexpert)")
    assert registry.ids() == [*BUILTIN_IDS, "fake"]
    assert registry.get("fake").__name__ == "FakeExpert"
    assert registry.notes == []

    rows, stderr = invoke_json()
    fake = rows[-1]
    assert (fake["id"], fake["source"], fake["available"]) == ("fake", "entry point (fakeexpert)", True)
    assert fake["paper"] == "Nobody et al., 2099"
    assert "Warning" not in stderr


def test_entry_point_clash_with_builtin_is_reported(plugin_dir):
    write_module(plugin_dir, "fake_expert_mod")
    fake_distribution(plugin_dir, {"fake": "fake_expert_mod:FakeExpert", "static": "fake_expert_mod:FakeExpert"})
    registry = Registry.discover()
    assert registry.spec("static").source == "built-in"  # the built-in wins
    assert registry.get("static") is Static3DGS
    assert "fake" in registry.ids()
    (note,) = registry.notes
    assert "entry point (fakeexpert)" in note and "'static'" in note and "ignored" in note
    assert registry.notes_for("static") == [note] and registry.notes_for("fake") == []

    rows, stderr = invoke_json()
    by_id = {r["id"]: r for r in rows}
    assert by_id["static"]["source"] == "built-in" and by_id["static"]["notes"] == [note]
    assert "Warning:" in stderr and "fakeexpert" in stderr

    result = CliRunner().invoke(app, ["experts", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ignored" in result.stderr and "static" in result.stderr


def test_broken_entry_points_are_unavailable_not_fatal(plugin_dir):
    write_module(plugin_dir, "fake_expert_mod")
    fake_distribution(plugin_dir, {"ghost": "no_such_module_xyz:Ghost", "alias": "fake_expert_mod:FakeExpert",
                                   "weird": "not a target"})
    registry = Registry.discover()
    assert registry.ids() == [*BUILTIN_IDS, "alias", "ghost", "weird"]
    ok, detail, _ = registry.status("ghost")
    assert not ok and "module 'no_such_module_xyz' cannot be imported" in detail
    ok, detail, _ = registry.status("alias")
    assert not ok and "info.id 'fake'" in detail
    ok, detail, _ = registry.status("weird")
    assert not ok and "expected module:Class" in detail

    rows, _ = invoke_json()
    assert {r["id"]: r["available"] for r in rows[-3:]} == {"alias": False, "ghost": False, "weird": False}


def test_plugin_overrides_entry_point_with_a_note(plugin_dir):
    write_module(plugin_dir, "fake_expert_mod")
    write_module(plugin_dir, "my_other_mod", cls="Other")
    fake_distribution(plugin_dir, {"fake": "fake_expert_mod:FakeExpert"})
    registry = Registry.discover(["my_other_mod:Other"])
    assert registry.spec("fake") == ExpertSpec("fake", "my_other_mod:Other", "plugin")
    assert registry.get("fake").__name__ == "Other"
    assert registry.notes_for("fake") and "replaces" in registry.notes_for("fake")[0]


# ----------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("args", [["experts", "--help"], ["experts", "list", "--help"]])
def test_experts_help_does_not_import_torch(args):
    probe = textwrap.dedent(f"""
        import json, sys
        sys.argv = ['moegs-bench', *{args!r}]
        from moegs_bench.cli import main
        try:
            main()
        except SystemExit as e:
            code = e.code
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'gsplat'))
        print('@@' + json.dumps({{'code': code, 'heavy': heavy}}))
    """)
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    help_text, _, tail = proc.stdout.rpartition("@@")
    assert json.loads(tail) == {"code": 0, "heavy": []}
    assert ("--plugin" if "list" in args else "list") in help_text
