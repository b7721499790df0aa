"""Packaging: the wheel maps the top-level folders into ``moegs_bench.*`` (README, "Layout"), ships
no generic top-level packages, and the editable install resolves the same module names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

ROOT = Path(__file__).resolve().parents[1]

# import name -> source folder (pyproject [tool.setuptools] package-dir)
MAPPED = {
    "moegs_bench": "moegs_bench",
    "moegs_bench.experts": "experts",
    "moegs_bench.adapters": "adapters",
    "moegs_bench.router": "router",
    "moegs_bench.reports": "reports",
}
MODULES = [*MAPPED, "moegs_bench.render", "moegs_bench.cli"]
GENERIC = ["experts", "adapters", "router", "reports", "render", "cli", "tests", "benchmarks", "scripts"]

_SKIP = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", ".venv", ".whl", "*.pyc"
)


def _where(modules: list[str], *, cwd: Path, pythonpath: Path | None = None) -> dict[str, str | None]:
    """``{module: __file__}`` as a fresh interpreter in ``cwd`` sees it (None = not importable)."""
    probe = (
        "import importlib, json, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = importlib.import_module(name).__file__\n"
        "    except ImportError:\n"
        "        out[name] = None\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    proc = subprocess.run(
        [sys.executable, "-c", probe, *modules], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the source tree (no stale build/ folder leaks in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)]
    try:
        import setuptools  # noqa: F401  (the build backend, from the dev extra)

        cmd.insert(4, "--no-build-isolation")
    except ImportError:  # let pip fetch it into an isolated build environment
        pass
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = (tmp / "dist").glob("moegs_bench-*.whl")
    return whl


@pytest.fixture(scope="module")
def target(wheel: Path) -> Path:
    """The wheel installed with ``pip install --no-deps --target``."""
    target = wheel.parent.parent / "target"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_wheel_has_only_the_moegs_bench_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"moegs_bench"}, top
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "moegs-bench = moegs_bench.cli:main" in text


def test_wheel_ships_every_module_of_the_source_tree(wheel: Path) -> None:
    """Every .py file under the mapped folders lands in the wheel (catches a subpackage missing
    from pyproject's package list)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for package, folder in MAPPED.items():
        for py in sorted((ROOT / folder).rglob("*.py")):
            rel = py.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            if "/".join([*package.split("."), *rel.parts]) not in names:
                missing.append(f"{folder}/{rel.as_posix()}")
    assert not missing, f"not in the wheel (add the package to pyproject): {missing}"


def test_installed_wheel_resolves_namespaced_modules(target: Path, tmp_path: Path) -> None:
    where = _where([*MODULES, *GENERIC], cwd=tmp_path, pythonpath=target)
    for name in MODULES:
        assert where[name] is not None, f"{name} does not import from the installed wheel"
        assert Path(where[name]).resolve().is_relative_to(target.resolve()), (name, where[name])
    leaked = {name: where[name] for name in GENERIC if where[name] is not None}
    assert not leaked, f"generic top-level imports resolve: {leaked}"


def _editable_source() -> Path | None:
    """The folder moegs-bench is installed from in editable mode, or None."""
    # Several may be found (an egg-info in the source tree has no direct_url.json): take the
    # installed one.
    for dist in metadata.distributions(name="moegs-bench"):
        direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
        url = direct_url.get("url", "")
        if direct_url.get("dir_info", {}).get("editable", False) and url.startswith("file://"):
            return Path(url2pathname(urlparse(url).path))
    return None


def test_editable_install_resolves_namespaced_modules(tmp_path: Path) -> None:
    source = _editable_source()
    if source is None:
        pytest.skip("moegs-bench is not installed in editable mode (bash scripts/install.sh does that)")
    if source.resolve() != ROOT:
        pytest.skip(f"the editable install points at another checkout: {source}")
    where = _where([*MODULES, *GENERIC], cwd=tmp_path)
    expected = {**MAPPED, "moegs_bench.render": "moegs_bench/render", "moegs_bench.cli": "moegs_bench/cli"}
    for name, folder in expected.items():
        assert where[name] is not None, f"{name} does not import from the editable install"
        assert Path(where[name]).resolve() == (ROOT / folder / "__init__.py").resolve(), (name, where[name])
    leaked = {name: where[name] for name in GENERIC if where[name] is not None}
    assert not leaked, f"generic top-level imports resolve: {leaked}"
