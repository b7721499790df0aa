"""Honest expert caches: the cache key sees the code an expert's training runs through
(moegs_bench.codehash, app.run.expert_cache_folder), and nothing else."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import moegs_bench
from moegs_bench.adapters.base import Expert
from moegs_bench.adapters.registry import BUILTIN_EXPERTS, Registry
from moegs_bench.app.run import expert_cache_folder, expert_code_roots
from moegs_bench.data.state import dataset_state
from moegs_bench.codehash import class_modules, closure_digest, locate_module, source_closure, source_facts
from moegs_bench.data.synthetic import generate
from moegs_bench.training.trainer import train_expert
from test_cli import cli

UNRELATED = ("moegs_bench.cli", "moegs_bench.app", "moegs_bench.reports", "moegs_bench.router")


def test_version_comes_from_the_package_metadata():
    assert moegs_bench.__version__ == metadata.version("moegs-bench")


# ------------------------------------------------------------------------------- one module's source


def test_imports_are_found_everywhere_and_made_absolute():
    source = textwrap.dedent('''
        """Docstring naming moegs_bench.cli, which is not an import."""
        import os
        import pkg.a as alias
        from pkg import b, c as see
        from . import sibling
        from .sub.deep import thing
        from .. import beyond_the_top
        from typing import TYPE_CHECKING
        FORMATS = {"x": "pkg.loaders.x", "y": "pkg.z:Class", "words": "not a module"}
        if TYPE_CHECKING:  # never runs
            from pkg.only_for_types import Hint

        def lazy():
            from pkg.inner import *
            import pkg.late
    ''').encode()
    facts = source_facts(source, "pkg.mod")  # a module of the package pkg
    assert facts.imports == {"os", "pkg.a", "pkg", "pkg.b", "pkg.c", "pkg.sibling", "pkg.sub.deep",
                             "pkg.sub.deep.thing", "typing", "typing.TYPE_CHECKING", "pkg.loaders.x", "pkg.z",
                             "pkg.inner", "pkg.late"}
    in_package = source_facts(b"from . import x\nfrom .. import y\n", "pkg.sub", is_package=True)
    assert in_package.imports == {"pkg.sub", "pkg.sub.x", "pkg", "pkg.y"}


def test_comments_docstrings_and_layout_do_not_change_the_digest_code_does():
    base = b'"""Module doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1\n'
    same = [
        b'"""Another doc."""\n\n\n# a comment\ndef f(x):  # why\n    """Other doc."""\n\n'
        b'    return (x +\n            1)\n',
        b'def f(x):\n    return x + 1\n',
    ]
    other = [b'def f(x):\n    return x + 2\n', b'def f(y):\n    return y + 1\n', b'def f(x):\n    return 1 + x\n',
             b'def f(x):\n    y = "s"\n    return x + 1\n',
             b'def f(x):\n    return x + 1\n\n"a string, not the docstring"\n']
    digest = source_facts(base, "m").digest
    assert all(source_facts(s, "m").digest == digest for s in same)
    assert len({digest, *(source_facts(s, "m").digest for s in other)}) == 1 + len(other)


# ------------------------------------------------------------------------------- closures


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_closure_of_a_written_package(tmp_path, monkeypatch):
    _write(tmp_path, {
        "cachetest_pkg/__init__.py": "",
        "cachetest_pkg/a.py": "import json\nfrom cachetest_pkg.sub import d\n\ndef f():\n    import cachetest_pkg.b\n",
        "cachetest_pkg/b.py": "from .c_helper import VALUE\n",
        "cachetest_pkg/c_helper.py": "VALUE = 1\n",
        "cachetest_pkg/unused.py": "import cachetest_pkg.a\n",
        "cachetest_pkg/sub/__init__.py": "from cachetest_pkg.sub.e import E\n",
        "cachetest_pkg/sub/d.py": "from cachetest_other import thing\n",
        "cachetest_pkg/sub/e.py": "E = 2\n",
        "cachetest_other.py": "thing = 3\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    closure = source_closure(["cachetest_pkg.a"])
    assert list(closure) == ["cachetest_pkg", "cachetest_pkg.a", "cachetest_pkg.b", "cachetest_pkg.c_helper",
                             "cachetest_pkg.sub", "cachetest_pkg.sub.d", "cachetest_pkg.sub.e"]
    assert closure["cachetest_pkg.sub.d"].path == tmp_path / "cachetest_pkg" / "sub" / "d.py"
    assert closure["cachetest_pkg.sub"].is_package and not closure["cachetest_pkg.a"].is_package
    both = source_closure(["cachetest_pkg.a"], packages=["cachetest_pkg", "cachetest_other"])
    assert set(both) == set(closure) | {"cachetest_other"}
    assert not any(name.startswith("cachetest") for name in sys.modules)  # nothing was imported
    before = closure_digest(["cachetest_pkg.a"])
    (tmp_path / "cachetest_pkg" / "unused.py").write_text("changed = True\n")
    assert closure_digest(["cachetest_pkg.a"]) == before
    (tmp_path / "cachetest_pkg" / "c_helper.py").write_text("VALUE = 2\n")
    assert closure_digest(["cachetest_pkg.a"]) != before  # every call reads the files again


def test_closure_of_every_builtin_expert_is_its_code_and_the_training_code():
    registry = Registry.discover()
    train_module = train_expert.__module__
    for eid, target in BUILTIN_EXPERTS.items():
        cls = registry.get(eid)
        closure = source_closure(expert_code_roots(cls, cls.profile("tiny")))
        module = target.partition(":")[0]
        assert {module, train_module, "moegs_bench.adapters.base", "moegs_bench.render"} <= set(closure), eid
        assert not [m for m in closure if m.startswith(UNRELATED)], eid
        others = {t.partition(":")[0] for e, t in BUILTIN_EXPERTS.items() if e != eid}
        assert not others & set(closure), eid  # one expert's edit never retrains another


def _edited(target: Path, text: bytes = b"\nEDITED = 1\n"):
    """A file reader that sees ``text`` appended to ``target`` (every other file as on disk)."""
    target = target.resolve()
    return lambda path: path.read_bytes() + (text if path.resolve() == target else b"")


@pytest.mark.parametrize(
    ("module", "changes"),
    [
        ("moegs_bench.experts.fourdgs", {"4dgs"}),
        ("moegs_bench.experts.ed3dgs", {"e-d3dgs"}),
        ("moegs_bench.experts._profiles", {"4dgs", "e-d3dgs"}),
        (train_expert.__module__, {"4dgs", "e-d3dgs"}),
        ("moegs_bench.adapters.base", {"4dgs", "e-d3dgs"}),
        ("moegs_bench.render._torch_raster", {"4dgs", "e-d3dgs"}),
        ("moegs_bench.cli", set()),
        ("moegs_bench.cli._run", set()),
        ("moegs_bench.reports.gate_maps", set()),
        ("moegs_bench.router.mixture", set()),
        ("moegs_bench.app.run", set()),
        ("moegs_bench.adapters.registry", set()),
    ],
)
def test_an_edit_changes_the_keys_of_the_experts_that_run_it(module, changes):
    registry = Registry.discover()
    roots = {e: expert_code_roots(registry.get(e), registry.get(e).profile("tiny")) for e in ("4dgs", "e-d3dgs")}
    target = locate_module(module).path
    assert target is not None and target.is_file()
    for eid, r in roots.items():
        before = closure_digest(r)
        assert closure_digest(r, read=_edited(target, b"\n# only a comment\n")) == before
        assert (closure_digest(r, read=_edited(target)) != before) == (eid in changes), (module, eid)


def test_the_cache_folder_names_expert_profile_and_key(tmp_path):
    registry = Registry.discover()
    cls = registry.get("static")
    cfg = cls.profile("tiny")
    (tmp_path / "data").mkdir()
    image = tmp_path / "data" / "a.png"
    image.write_bytes(b"1234")
    state = dataset_state(tmp_path / "data", [image])
    folder = expert_cache_folder(tmp_path, "synthetic:kitchen", cls, cfg, "tiny", 0, state)
    assert folder.parent == tmp_path / "synthetic-kitchen" and folder.name.startswith("static-tiny-")
    assert expert_cache_folder(tmp_path, "synthetic:kitchen", cls, cfg, "tiny", 0, state) == folder
    assert expert_cache_folder(tmp_path, "synthetic:kitchen", cls, cfg, "tiny", 1, state) != folder
    assert expert_cache_folder(tmp_path, "synthetic:kitchen", cls, cfg.with_iterations(3), "tiny", 0, state) != folder
    # the same path with other files (a dataset replaced in place) is another entry
    image.write_bytes(b"12345")
    replaced = dataset_state(tmp_path / "data", [image])
    assert expert_cache_folder(tmp_path, "synthetic:kitchen", cls, cfg, "tiny", 0, replaced) != folder
    assert class_modules(cls, Expert) == ("moegs_bench.experts.static3dgs", "moegs_bench.adapters.base")


# ------------------------------------------------------------------------------- end to end

PLUGIN = '''
"""The static baseline with its opacities scaled by a gain (a stand-in for a fix to an expert)."""

from dataclasses import replace

import torch

from moegs_bench.experts.static3dgs import Static3DGS

OPACITY_GAIN = {gain}


class Dimmed(Static3DGS):
    info = replace(Static3DGS.info, id="dimmed", method="static baseline, dimmed")

    def gaussians_at(self, when):
        t = self.table
        return self.make_state(t["means"], t["quats"], torch.exp(t["scales"]),
                               OPACITY_GAIN * torch.sigmoid(t["opacities"]))
'''


@pytest.mark.slow
def test_editing_a_plugin_retrains_it_and_reuses_the_other_expert(tmp_path, monkeypatch):
    scene = generate(tmp_path / "kitchen", "kitchen", frames=2, width=32, height=24, train_cameras=2)
    cloud = scene / "init_pt_cld.npz"  # [P, 7]: keep 150 of the points (renders dominate the run time)
    np.savez(cloud, data=np.load(cloud)["data"][::20])
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]))

    def run(name: str, gain: float) -> dict:
        (plugin_dir / "dimmed_expert.py").write_text(PLUGIN.format(gain=gain))
        proc = cli("run", "--plugin", "dimmed_expert:Dimmed", "--experts", "dimmed,static", "--scene", str(scene),
                   "--out", str(tmp_path / "runs"), "--name", name, "--cache", str(tmp_path / "cache"),
                   "--expert-iterations", "1", "--router-iterations", "1", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        return json.loads((tmp_path / "runs" / name / "experts.json").read_text())

    first = run("first", 1.0)
    assert not first["dimmed"]["reused"] and not first["static"]["reused"]
    second = run("second", 0.5)
    assert not second["dimmed"]["reused"] and second["dimmed"]["folder"] != first["dimmed"]["folder"]
    assert second["static"]["reused"] and second["static"]["folder"] == first["static"]["folder"]
    assert Path(first["dimmed"]["folder"]).is_dir()  # the training before the edit is kept
