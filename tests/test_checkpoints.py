"""Checkpoints: one format for every kind of training, read without ever running code from a file.

The malicious files are written with the pickle rules themselves (an object whose ``__reduce__``
would create a marker file when unpickled); the loaders must refuse them with one line and the
marker must never appear.
"""

from __future__ import annotations

import ast
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from moegs_bench._checks import InputError
from moegs_bench.adapters.registry import Registry
from moegs_bench.data import load_scene
from moegs_bench.data.synthetic import generate
from moegs_bench.training.checkpoint import (
    FORMAT, FORMAT_VERSION, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the pickle ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Crafted files in the shapes a loader might meet."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["torch.save dict"] = folder / "dict.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "router", "x": _Payload(marker)},
               files["torch.save dict"])
    files["torch.save object"] = folder / "object.pt"
    torch.save(_Payload(marker), files["torch.save object"])
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        files[f"raw pickle {protocol}"] = folder / f"raw{protocol}.pt"
        files[f"raw pickle {protocol}"].write_bytes(pickle.dumps({"step": 1, "x": _Payload(marker)}, protocol=protocol))
    return files


def _assert_one_line(err: Exception, path: Path) -> str:
    msg = str(err)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    assert "weights_only" not in msg and "trusted source" not in msg, msg  # never torch's advice
    assert msg.endswith(")") and msg.count("(") == msg.count(")"), msg  # whole, not cut mid-sentence
    return msg


def test_crafted_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    for what, path in _evil_files(tmp_path / "evil", marker).items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert isinstance(info.value, InputError)
        _assert_one_line(info.value, path)
        assert not marker.exists(), what
    # the payload is live: plain pickle would have run it (the oracle for "never ran")
    with open(tmp_path / "evil" / "raw2.pt", "rb") as f:
        pickle.load(f)["x"].close()  # noqa: S301 - deliberately, to show the file is dangerous
    assert marker.exists()


def test_bad_files_get_one_whole_line(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, Checkpoint("expert", {"expert": "x", "state_version": 1}, {}, 3, False, 1.0,
                                     {"model": {"w": torch.ones(2)}}))
    data = good.read_bytes()
    cases = {"empty.pt": b"", "text.pt": b"not a checkpoint", "truncated.pt": data[: len(data) // 2]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
            load_checkpoint(tmp_path / name)
        _assert_one_line(info.value, tmp_path / name)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a moegs-bench checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    payload = torch.load(good, weights_only=True)
    for key, value, needle in (("step", "3", "'step': expected int, got str"),
                               ("kind", "teacher", "kind 'teacher'"),
                               ("components", ["model", "gone"], "components"),
                               ("finished", 1, "'finished': expected bool")):
        torch.save({**payload, key: value}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=needle):
            load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_round_trip_and_what_the_caller_expects(tmp_path):
    path = tmp_path / "ck" / "router.pt"
    states = {"router": {"columns": {"a": {"w": torch.arange(3.0)}}, "router": {"phi.weight": torch.eye(2)}}}
    cfg = {"iterations": 5, "temperature": 1.0, "eval_temperature": None, "variant": "volume-aware"}
    save_checkpoint(path, Checkpoint("router", {"experts": ["a", "b"]}, cfg, 5, True, 2.5, states, None))
    raw = torch.load(path, weights_only=True)  # the layout, as the module doc writes it
    assert raw["format"] == "moegs-bench/checkpoint" and raw["format_version"] == 2 and raw["kind"] == "router"
    assert raw["components"] == ["router"] and raw["step"] == 5 and raw["identity"] == {"experts": ["a", "b"]}
    ck = load_checkpoint(path, kind="router", identity={"experts": ["a", "b"]}, config=cfg)
    assert ck.step == 5 and ck.finished and ck.elapsed == 2.5 and ck.optimizer is None
    assert torch.equal(ck.states["router"]["columns"]["a"]["w"], torch.arange(3.0))
    with pytest.raises(CheckpointError, match="a router checkpoint, expected an expert checkpoint"):
        load_checkpoint(path, kind="expert")
    with pytest.raises(CheckpointError, match=r"router checkpoint of experts \['a', 'b'\], this mixture has"):
        load_checkpoint(path, identity={"experts": ["a", "c"]})
    with pytest.raises(CheckpointError, match="another configuration \\(differs in temperature\\)"):
        load_checkpoint(path, config={**cfg, "temperature": 0.5})
    with pytest.raises(ValueError, match="clash"):
        save_checkpoint(path, Checkpoint("router", {}, {}, 1, False, 0.0, {"step": {}}))


def test_version_1_files_are_still_read(tmp_path):
    """Files in the two version-1 layouts (written here by their own rules) load as version 2."""
    model = {"table.means": torch.randn(4, 3), "_extra_state": {"extent": 2.0}}
    densifier = {"grad_accum": torch.zeros(4), "count": torch.ones(4), "max_radii": torch.zeros(4)}
    torch.save({"format": "moegs-bench/expert-checkpoint", "format_version": 1, "expert": "4dgs",
                "state_version": 1, "config": {"train": {"iterations": 9}}, "step": 9, "finished": True,
                "elapsed": 3.0, "num_gaussians": 4, "model": model, "optimizer": None, "densifier": densifier},
               tmp_path / "expert.pt")
    ck = load_checkpoint(tmp_path / "expert.pt", kind="expert", expert="4dgs", state_version=1)
    assert ck.finished and ck.step == 9 and torch.equal(ck.model["table.means"], model["table.means"])
    assert torch.equal(ck.densifier["count"], densifier["count"])
    with pytest.raises(CheckpointError, match="state version 1, this code expects version 2"):
        load_checkpoint(tmp_path / "expert.pt", state_version=2)
    router = {"columns": {"a": {"router_w": torch.ones(2, 1)}}, "router": {}}
    for optimizer, finished in ((None, True), ({"state": {}, "param_groups": []}, False)):
        torch.save({"format": "moegs-bench/router-checkpoint", "format_version": 1, "experts": ["a", "b"],
                    "config": {"iterations": 3}, "step": 3, "elapsed": 1.0, "router": router,
                    "optimizer": optimizer}, tmp_path / "router.pt")
        ck = load_checkpoint(tmp_path / "router.pt", kind="router", identity={"experts": ["a", "b"]},
                             config={"iterations": 3})
        assert ck.finished is finished and torch.equal(ck.states["router"]["columns"]["a"]["router_w"],
                                                       torch.ones(2, 1))


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene") / "kitchen"
    generate(root, "kitchen", frames=4, width=16, height=12, train_cameras=2)
    return load_scene(root)


def test_run_and_train_refuse_a_crafted_router_or_expert_checkpoint(small_scene, tmp_path):
    """The real entry points: a crafted router/mixture.pt, router/latest.pt or expert checkpoint."""
    from moegs_bench.router.mixture import ROUTER_PROFILES, Mixture
    from moegs_bench.router.train import train_router
    from moegs_bench.training.trainer import FINAL_CKPT, LATEST_CKPT, train_expert

    marker = tmp_path / "PWNED"
    evil = _evil_files(tmp_path / "evil", marker)["torch.save dict"]
    registry = Registry.discover()
    experts = [registry.get(e).from_scene(small_scene, "tiny") for e in ("static", "stg")]
    mixture = Mixture(experts, replace(ROUTER_PROFILES["tiny"], iterations=2))
    run = tmp_path / "run"
    (run / "router").mkdir(parents=True)
    for name in ("mixture.pt", "latest.pt"):
        target = run / "router" / name
        target.write_bytes(evil.read_bytes())
        with pytest.raises(InputError) as info:
            train_router(mixture, small_scene, run / "router" / "latest.pt", final=run / "router" / "mixture.pt",
                         progress=False, log=lambda s: None)
        _assert_one_line(info.value, target)
        target.unlink()
    cls = registry.get("static")
    out = tmp_path / "expert"
    train = dict(scene_spec="s", config=cls.profile("tiny").with_iterations(2), profile="tiny", resume=True,
                 progress=False, log=lambda s: None)
    train_expert(cls, small_scene, out, **train)
    (out / FINAL_CKPT).write_bytes(evil.read_bytes())  # a finished run whose expert.pt was replaced
    with pytest.raises(InputError) as info:
        train_expert(cls, small_scene, out, **train)
    _assert_one_line(info.value, out / FINAL_CKPT)
    (out / FINAL_CKPT).unlink()
    (out / "results.json").unlink()
    (out / LATEST_CKPT).parent.mkdir(exist_ok=True)
    (out / LATEST_CKPT).write_bytes(evil.read_bytes())  # an unfinished run to resume
    with pytest.raises(InputError) as info:
        train_expert(cls, small_scene, out, **train)
    _assert_one_line(info.value, out / LATEST_CKPT)
    assert not marker.exists()


def _restricted_unpickler_only(tree: ast.Module) -> bool:
    """The module's one use of ``pickle``: a ``pickle.Unpickler`` subclass that overrides
    ``find_class`` (an allow-list of globals); no ``pickle.load``/``loads``/``Unpickler(...)`` call."""
    subclasses = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                  and any(ast.unparse(b) == "pickle.Unpickler" for b in n.bases)]
    guarded = subclasses and all(any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in c.body)
                                 for c in subclasses)
    direct = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
              and ast.unparse(n.func) in ("pickle.load", "pickle.loads", "pickle.Unpickler")]
    return bool(guarded) and not direct


def test_no_code_path_unpickles_untrusted_data():
    """Every ``torch.load`` in the package passes ``weights_only=True``; no ``pickle`` loads and no
    ``np.load(allow_pickle=True)`` (numpy's default is False). The one module allowed to import
    ``pickle`` uses it only through an allow-list unpickler (the LPIPS backbones' numpy arrays)."""
    offenders = []
    for folder in ("moegs_bench", "experts", "adapters", "router", "reports"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                    if any(n and n.split(".")[0] in ("cPickle", "dill", "joblib") for n in names) or (
                            any(n and n.split(".")[0] == "pickle" for n in names)
                            and not (isinstance(node, ast.Import) and _restricted_unpickler_only(tree))):
                        offenders.append(f"{where}: imports a pickle module")
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = ast.unparse(node.func.value)
                kw = {k.arg: k.value for k in node.keywords}
                if node.func.attr == "load" and owner == "torch":
                    value = kw.get("weights_only")
                    if not (isinstance(value, ast.Constant) and value.value is True):
                        offenders.append(f"{where}: torch.load without weights_only=True")
                if node.func.attr == "load" and owner in ("np", "numpy"):
                    value = kw.get("allow_pickle")
                    if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                        offenders.append(f"{where}: np.load with allow_pickle other than False")
    assert not offenders, offenders


def test_cli_refuses_a_crafted_checkpoint_in_one_line(tmp_path):
    from test_cli import assert_one_line_error, cli

    root = tmp_path / "scene"
    generate(root, "kitchen", frames=4, width=16, height=12, train_cameras=2)
    out, marker = tmp_path / "run", tmp_path / "PWNED"
    args = ("train-expert", "--expert", "static", "--scene", str(root), "--out", str(out), "--iterations", "2",
            "--cache", str(tmp_path / "cache"), "--no-progress")
    assert cli(*args).returncode == 0
    (out / "expert.pt").unlink()
    (out / "results.json").unlink()
    evil = _evil_files(tmp_path / "evil", marker)["torch.save dict"]
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "latest.pt").write_bytes(evil.read_bytes())
    line = assert_one_line_error(cli(*args, "--resume"), "checkpoints/latest.pt", "not a readable checkpoint")
    assert "weights_only" not in line and not marker.exists()


def test_a_setting_added_since_the_checkpoint_counts_as_its_default(tmp_path):
    path = tmp_path / "old.pt"
    save_checkpoint(path, Checkpoint(kind="expert", identity={"expert": "x"}, config={"a": 1, "train": {"n": 5}},
                                     step=3, finished=True, elapsed=1.0, states={"model": {}}))
    new = {"a": 1, "window": "flat", "train": {"n": 5, "ramp": 0}}
    defaults = {"a": 7, "window": "flat", "train": {"n": 9, "ramp": 0}}
    assert load_checkpoint(path, config=new, config_defaults=defaults).step == 3  # (saved values are kept)
    with pytest.raises(CheckpointError, match="differs in window"):  # a non-default value of a new setting
        load_checkpoint(path, config={**new, "window": "two-sided"}, config_defaults=defaults)
    with pytest.raises(CheckpointError, match="differs in train, window"):  # no defaults: every key must be there
        load_checkpoint(path, config=new)
