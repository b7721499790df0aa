"""Configuration trees: typed parsing of ``--set`` values, validation that names keys, unknown keys
with suggestions, the run's tree (moegs_bench.app.config) and its round trip through run.json."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import pytest

from moegs_bench.adapters.base import ExpertConfigError, ExpertError
from moegs_bench.adapters.registry import Registry
from moegs_bench.app.config import Assignment, ExpertsConfig, RunConfig, SceneConfig, text_assignments
from moegs_bench.config import (
    ConfigError, Text, config_from_dict, config_to_dict, leaf_keys, parse_assignment, set_key, setting,
)
from moegs_bench.errors import UserInputError
from moegs_bench.router.config import ROUTER_PROFILES, RouterConfig

BUILT_IN = ("4dgs", "e-d3dgs", "ex4dgs", "stg", "static")


@dataclass(frozen=True)
class Inner:
    count: int = 1
    rate: float = setting(0.5, gt=0)
    sizes: tuple[int, ...] = (1, 2)
    window: tuple[int, int] | None = None
    kind: str = setting("a", choices=("a", "b"))
    big: float = setting(math.inf, nonfinite=True)


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str | None = None
    flag: bool = False


def _set(tree_cls, *items: str):
    tree = config_to_dict(tree_cls())
    for item in items:
        set_key(tree, *parse_assignment(item))
    return config_from_dict(tree_cls, tree)


# ------------------------------------------------------------------------ generic machinery


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("inner.count=7", ("inner", "count", 7)),
        ("inner.count= 7 ", ("inner", "count", 7)),
        ("inner.rate=2", ("inner", "rate", 2.0)),
        ("inner.rate=1e-3", ("inner", "rate", 0.001)),
        ("inner.sizes=3,4,5", ("inner", "sizes", (3, 4, 5))),
        ("inner.sizes=[6]", ("inner", "sizes", (6,))),
        ("inner.window=0:10", ("inner", "window", (0, 10))),
        ("inner.window=(2, 3)", ("inner", "window", (2, 3))),
        ("inner.window=none", ("inner", "window", None)),
        ("inner.kind=b", ("inner", "kind", "b")),
        ("inner.big=inf", ("inner", "big", math.inf)),
        ("name=x=y", (None, "name", "x=y")),
        ("name=null", (None, "name", None)),
        ("flag=true", (None, "flag", True)),
        ("flag=Off", (None, "flag", False)),
    ],
)
def test_text_values_are_parsed_by_the_field_type(item, expected):
    group, name, value = expected
    out = _set(Outer, item)
    got = getattr(getattr(out, group) if group else out, name)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("inner.rate=inf", "inner.rate: expected a finite number > 0, got inf"),
        ("inner.rate=nan", "inner.rate: expected a finite number > 0, got nan"),
        ("inner.rate=-1", "inner.rate: expected a finite number > 0, got -1.0"),
        ("inner.rate=fast", "inner.rate: expected a number, got 'fast'"),
        ("inner.count=1.5", "inner.count: expected an integer, got '1.5'"),
        ("inner.window=1:2:3", "inner.window: expected 2 values or none, got '1:2:3'"),
        ("inner.window=a:b", "inner.window[0]: expected an integer, got 'a'"),
        ("inner.kind=c", "inner.kind: expected one of a, b, got 'c'"),
        ("flag=maybe", "flag: expected true or false, got 'maybe'"),
        ("inner=3", "inner: is a group of settings; set one of its keys (inner.count, inner.rate"),
        ("name.first=3", "name.first: unknown key: name is a single setting, not a group"),
    ],
)
def test_bad_values_name_their_key(item, message):
    with pytest.raises(ConfigError) as info:
        _set(Outer, item)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, UserInputError)
    assert info.value.key == message.split(":")[0]


def test_unknown_keys_list_the_closest_valid_keys():
    with pytest.raises(ConfigError, match=r"inner\.rat: unknown key; closest valid keys: inner\.rate"):
        _set(Outer, "inner.rat=1")
    with pytest.raises(ConfigError, match=r"iner\.count: unknown key; closest valid keys: inner\.count"):
        _set(Outer, "iner.count=1")
    with pytest.raises(ConfigError, match=r"zzz: unknown key; valid keys start with: flag, inner, name"):
        _set(Outer, "zzz=1")
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict(Outer, {"inner": {"count": 1, "extra": 2}})


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1", ""])
def test_malformed_assignments(text):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment(text)


def test_data_is_type_checked_not_parsed():
    """run.json values keep their JSON types: a string is not parsed as a number, an int given to
    a float field stays an int (so a config's plain data survives a round trip unchanged)."""
    with pytest.raises(ConfigError, match="inner.count: expected an integer, got '3'"):
        config_from_dict(Outer, {"inner": {"count": "3"}})
    with pytest.raises(ConfigError, match="flag: expected true or false, got 1"):
        config_from_dict(Outer, {"flag": 1})
    with pytest.raises(ConfigError, match="inner.rate: expected a finite number > 0, got inf"):
        config_from_dict(Outer, {"inner": {"rate": float("inf")}})
    out = config_from_dict(Outer, {"inner": {"rate": 2, "sizes": [4, 5]}})
    assert out.inner.rate == 2 and type(out.inner.rate) is int and out.inner.sizes == (4, 5)
    assert config_to_dict(out)["inner"]["sizes"] == [4, 5]


def test_a_new_setting_is_one_field():
    """Adding a setting is one line: the field. ``--set``, parsing, validation, the unknown-key
    suggestions and the record follow from it (the diff below is that one line)."""

    @dataclass(frozen=True)
    class Before:
        inner: Inner = field(default_factory=Inner)

    @dataclass(frozen=True)
    class After:
        inner: Inner = field(default_factory=Inner)
        dropout: float = setting(0.1, ge=0, le=1)  # the one new line

    assert len(dataclasses.fields(After)) - len(dataclasses.fields(Before)) == 1
    with pytest.raises(ConfigError, match="unknown key"):
        _set(Before, "dropout=0.3")
    assert _set(After, "dropout=0.3").dropout == 0.3
    assert "dropout" in leaf_keys(config_to_dict(After()))
    with pytest.raises(ConfigError, match=r"dropout: expected a finite number >= 0 and <= 1, got 1.5"):
        _set(After, "dropout=1.5")
    with pytest.raises(ConfigError, match="closest valid keys: dropout"):
        _set(After, "droput=0.3")
    # and so does a new router setting, reached through the run's tree
    NewRouter = dataclasses.make_dataclass(  # noqa: N806
        "NewRouter", [("top_k", int, setting(2, ge=1))], bases=(RouterConfig,), frozen=True)
    tree = {"router": config_to_dict(NewRouter())}
    set_key(tree, *parse_assignment("router.top_k=3"))
    assert NewRouter.from_dict(tree["router"], key="router").top_k == 3
    set_key(tree, *parse_assignment("router.top_k=0"))
    with pytest.raises(ConfigError, match=r"router.top_k: expected an integer >= 1, got 0"):
        NewRouter.from_dict(tree["router"], key="router")


# ---------------------------------------------------------------------------- router config


def test_router_config_validates_on_construction():
    with pytest.raises(ConfigError, match="temperature: expected a finite number > 0, got inf"):
        RouterConfig(temperature=float("inf"))
    with pytest.raises(ConfigError, match="variant: expected one of volume-aware, volume, pixel"):
        RouterConfig(variant="softmax")
    with pytest.raises(ConfigError, match="render_mode: expected one of"):
        RouterConfig(render_mode="fast")
    with pytest.raises(ConfigError, match="iterations: expected an integer >= 1, got 0"):
        RouterConfig(iterations=0)
    with pytest.raises(ConfigError, match="eval_temperature"):
        RouterConfig(eval_temperature=-1.0)
    for name, cfg in ROUTER_PROFILES.items():
        assert RouterConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg, name
    from moegs_bench.router.mixture import ROUTER_PROFILES as again, RouterConfig as same

    assert same is RouterConfig and again is ROUTER_PROFILES


# --------------------------------------------------------------------------- expert configs


@pytest.mark.parametrize("eid", BUILT_IN)
def test_expert_config_values_are_validated_by_key(eid):
    cls = Registry.discover().get(eid)
    data = cls.profile("tiny").to_dict()
    data["train"]["lambda_dssim"] = float("nan")
    with pytest.raises(ExpertConfigError) as info:
        cls.config_class.from_dict(data, key=f"experts.{eid}")
    assert str(info.value) == f"experts.{eid}.train.lambda_dssim: expected a finite number, got nan"
    assert isinstance(info.value, ExpertError) and isinstance(info.value, ConfigError)
    data["train"]["lambda_dssim"] = 0.2
    data["train"]["iterations"] = "ten"
    with pytest.raises(ExpertConfigError, match=r"^train.iterations: expected an integer, got 'ten'"):
        cls.config_class.from_dict(data)


# ---------------------------------------------------------------------------- the run's tree


@pytest.fixture(scope="module")
def classes():
    registry = Registry.discover()
    return [registry.get("4dgs"), registry.get("e-d3dgs")]


def test_default_run_tree_is_the_profiles(classes):
    """The default tree holds exactly the profile configs (same plain data: the expert cache key
    of a default run does not change)."""
    for profile in ("tiny", "paper"):
        config = RunConfig.resolve(classes, [Assignment("profile", profile, "--profile")])
        assert config.router == ROUTER_PROFILES[profile]
        for cls in classes:
            assert config.experts[cls.info.id] == cls.profile(profile)
            assert (json.dumps(config.experts[cls.info.id].to_dict())
                    == json.dumps(cls.profile(profile).to_dict()))
        stretched = RunConfig.resolve(classes, [Assignment("profile", profile), Assignment("expert_iterations", 40)])
        for cls in classes:
            assert stretched.experts[cls.info.id] == cls.profile(profile).with_iterations(40)


def test_set_reaches_every_part_of_the_run_tree(classes):
    config = RunConfig.resolve(classes, text_assignments([
        "router.temperature=0.1", "experts.4dgs.train.iterations=500", "experts.e-d3dgs.train.lambda_dssim=0.1",
        "experts.4dgs.resolution=8,8,8,4", "scene.downscale=2", "scene.frames=0:5", "seed=3", "profile=paper",
    ]))
    assert config.router == replace_router(ROUTER_PROFILES["paper"], temperature=0.1)
    assert config.experts["4dgs"].train.iterations == 500 and config.experts["4dgs"].resolution == (8, 8, 8, 4)
    assert config.experts["4dgs"].train.densify_until == classes[0].profile("paper").train.densify_until  # not stretched
    assert config.experts["e-d3dgs"].train.lambda_dssim == 0.1
    assert config.scene == SceneConfig(downscale=2, frames=(0, 5)) and config.seed == 3
    back = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())), {c.info.id: c for c in classes})
    assert back == config


def replace_router(cfg: RouterConfig, **changes) -> RouterConfig:
    return dataclasses.replace(cfg, **changes)


def test_the_last_assignment_of_a_key_wins(classes):
    config = RunConfig.resolve(classes, [Assignment("router.temperature", 0.5, "--temperature"),
                                         *text_assignments(["router.temperature=0.2"])])
    assert config.router.temperature == 0.2
    config = RunConfig.resolve(classes, [*text_assignments(["profile=paper"]), Assignment("profile", "tiny")])
    assert config.profile == "tiny" and config.router == ROUTER_PROFILES["tiny"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["router.temperature=inf"], "router.temperature: expected a finite number > 0, got inf"),
        (["router.tempreature=1"], "router.tempreature: unknown key; closest valid keys: router.temperature"),
        (["experts.stg.train.iterations=3"], "experts.stg.train.iterations: unknown key"),
        (["experts.4dgs.train.lambda_dssim=-inf"], "experts.4dgs.train.lambda_dssim: expected a finite number"),
        (["seed=-1"], "seed: expected an integer >= 0, got -1"),
        (["expert_iterations=0"], "expert_iterations: expected an integer >= 1, got 0"),
        (["profile=huge"], "profile: expected one of paper, small, tiny"),
        (["scene.frames=5:5"], "scene.frames: expected START:END with 0 <= START < END, got 5:5"),
        (["scene.downscale=0"], "scene.downscale: expected an integer >= 1"),
    ],
)
def test_bad_run_settings_name_their_key(classes, items, message):
    with pytest.raises(ConfigError) as info:
        RunConfig.resolve(classes, text_assignments(items))
    assert str(info.value).startswith(message), str(info.value)


def test_train_expert_tree_has_no_router(classes):
    config = ExpertsConfig.resolve(classes[:1], text_assignments(["experts.4dgs.train.iterations=7"]))
    assert config.experts["4dgs"].train.iterations == 7 and "router" not in config.to_dict()
    with pytest.raises(ConfigError, match="router.temperature: unknown key"):
        ExpertsConfig.resolve(classes[:1], text_assignments(["router.temperature=0.1"]))
    with pytest.raises(ConfigError, match="closest valid keys: experts.4dgs.train.iterations"):
        ExpertsConfig.resolve(classes[:1], text_assignments(["train.iterations=7"]))


def test_text_given_to_a_constructor_is_refused():
    with pytest.raises(ConfigError, match="expected a parsed value"):
        RouterConfig(variant=Text("pixel"))
