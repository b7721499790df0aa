"""Sweep specs and plans: validation with the place in the file, generators, point ids, stages."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from moegs_bench.sweep.plan import build_plan
from moegs_bench.sweep.spec import SpecError, load_spec, parse_override
from test_cli import assert_one_line_error, cli

REPO = Path(__file__).resolve().parents[1]
FOUR = ["4dgs", "e-d3dgs", "ex4dgs", "stg"]


def spec_file(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def plan_of(tmp_path: Path, text: str, overrides=()):
    return build_plan(load_spec(spec_file(tmp_path, text), [parse_override(o) for o in overrides]))


BAD = [
    ("command: run\nfoo: 1\n", "foo: unknown key"),
    ("command: train\n", "command: expected one of run, prune, distill, got 'train'"),
    ("command: run\nsettings: {experts: [4dgs, e-d3dgs]}\naxes:\n  router.temprature: [0.5]\n",
     "axes.router.temprature[0]: unknown key; closest valid keys: router.temperature"),
    ("command: run\nsettings: {experts: [4dgs, e-d3dgs]}\naxes:\n  router.temperature: [0.5, -1]\n",
     "axes.router.temperature[1]: expected"),
    ("command: run\naxes:\n  experts: [[4dgs, e-d3dgs], [4dgs, nope]]\n", "axes.experts[1]: unknown expert 'nope'"),
    ("command: run\naxes:\n  experts: [[4dgs]]\n", "axes.experts[0]: a mixture needs at least two experts"),
    ("command: run\nsettings: {experts: [4dgs, e-d3dgs]}\naxes:\n  router.variant: [volume, pixel]\n"
     "  router.temperature: [1.0]\ncombine: zip\n", "axes: combine: zip needs axes of one length"),
    ("command: run\nsettings: {experts: [4dgs, e-d3dgs]}\naxes:\n  router.temperature: [1.0]\n"
     "exclude:\n  - {router.variant: volume}\n", "exclude[0].router.variant: not an axis"),
    ("command: prune\naxes:\n  ratio: [0.5]\n", "source.experts: a prune sweep needs the experts"),
    ("command: prune\nsource: {experts: [4dgs, e-d3dgs]}\naxes:\n  ratio: [0.5, 1.5]\n",
     "axes.ratio[1]: expected a finite number > 0 and < 1, got 1.5"),
    ("command: distill\nsource: {experts: [4dgs, e-d3dgs]}\naxes:\n  student: [stg]\n",
     "axes.student[0]: 'stg' is not one of the source run's experts"),
    ("command: run\nseeds: [0, -1]\n", "seeds[1]: expected an integer >= 0, got -1"),
    ("command: run\nsettings: {seed: 3}\n", "settings.seed: scenes and seeds have their own lists"),
    ("command: run\nsettings: {experts: [4dgs, e-d3dgs], lpips: squeeze}\n",
     "settings.lpips: expected one of alex, vgg, none, got 'squeeze'"),
    ("command: run\nsettings: {experts: [4dgs, e-d3dgs]}\nresources: {launcher: pbs}\n",
     "resources.launcher: expected one of"),
    ("command: run\naxes:\n  experts: {subsets_of: [4dgs, stg], min_size: 3}\n",
     "axes.experts.min_size: expected an integer in 1..2, got 3"),
    ("command: run\n  x: [\n", "line 2, column 4: not valid YAML"),
    ("- run\n", "expected a mapping of keys"),
]


@pytest.mark.parametrize("text, needle", BAD, ids=[n.split(":")[0] for _, n in BAD])
def test_bad_specs_name_the_place_in_the_file(tmp_path, text, needle):
    with pytest.raises(SpecError) as err:
        plan_of(tmp_path, text)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "s.yaml") + ": "), message
    assert needle in message, message
    assert "\n" not in message


def test_cli_reports_a_bad_spec_in_one_line_and_writes_nothing(tmp_path):
    path = spec_file(tmp_path, BAD[2][0])
    for args in (["plan", str(path)], ["run", str(path), "--out", str(tmp_path / "sweep")]):
        proc = cli("sweep", *args)
        assert_one_line_error(proc, "axes.router.temprature[0]: unknown key")
    assert not (tmp_path / "sweep").exists()
    assert_one_line_error(cli("sweep", "plan", str(tmp_path / "missing.yaml")), "no such sweep spec file")
    assert_one_line_error(cli("sweep", "status", str(tmp_path)), "not a sweep folder")


def test_subsets_generator_product_zip_and_exclusions(tmp_path):
    text = ("command: run\nscenes: [synthetic:kitchen, synthetic:windy]\nseeds: [0, 1]\n"
            "axes:\n  experts: {subsets_of: [4dgs, e-d3dgs, ex4dgs, stg], min_size: 2}\n")
    plan = plan_of(tmp_path, text)
    runs = [p for p in plan if p.stage == "runs"]
    subsets = [list(c) for n in (2, 3, 4) for c in itertools.combinations(FOUR, n)]
    assert len(subsets) == 11
    assert sorted(map(tuple, (p.settings["experts"] for p in runs))) == sorted(map(tuple, subsets * 4))
    # experts: each (scene, expert, seed) once, before every run; each run depends on its own
    experts = [p for p in plan if p.stage == "experts"]
    assert len(experts) == 2 * 2 * 4 and len({p.id for p in experts}) == 16
    assert plan.index(runs[0]) == len(experts)
    by_id = {p.id: p for p in plan}
    for r in runs:
        assert sorted(by_id[d].identity["expert"] for d in r.depends) == sorted(r.settings["experts"])
        assert all(by_id[d].scene == r.scene and by_id[d].seed == r.seed for d in r.depends)

    zipped = plan_of(tmp_path, "command: run\nsettings: {experts: [4dgs, stg]}\ncombine: zip\naxes:\n"
                               "  router.variant: [volume, pixel]\n  router.temperature: [0.5, 2.0]\n"
                               "exclude:\n  - {router.variant: pixel, seed: 0}\n")
    assert [(p.values["router.variant"], p.values["router.temperature"])
            for p in zipped if p.stage == "runs"] == [("volume", 0.5)]
    product = plan_of(tmp_path, "command: run\nsettings: {experts: [4dgs, stg]}\naxes:\n"
                                "  router.variant: [volume, pixel]\n  router.temperature: [0.5, 2.0]\n"
                                "exclude:\n  - {router.variant: pixel, router.temperature: 2.0}\n")
    assert [(p.values["router.variant"], p.values["router.temperature"]) for p in product if p.stage == "runs"] == \
        [("volume", 0.5), ("volume", 2.0), ("pixel", 0.5)]


def test_point_ids_hash_the_resolved_configuration(tmp_path):
    def run_ids(settings: str, overrides=()):
        plan = plan_of(tmp_path, f"command: run\nsettings: {settings}\n", overrides)
        return [p.id for p in plan if p.stage == "runs"], [p.id for p in plan if p.stage == "experts"]

    base, experts = run_ids("{experts: [4dgs, stg]}")
    # the same configuration spelt differently: the same point
    assert run_ids("{experts: '4dgs, stg', router.temperature: 1.0, profile: tiny}") == (base, experts)
    assert run_ids("{experts: [4dgs, stg]}", ["router.temperature=1"]) == (base, experts)
    # a router setting changes the run point, not the experts; an expert setting changes both
    other, same_experts = run_ids("{experts: [4dgs, stg], router.temperature: 0.5}")
    assert other != base and same_experts == experts
    changed, changed_experts = run_ids("{experts: [4dgs, stg], experts.stg.train.iterations: 7}")
    assert changed != base and changed_experts[0] == experts[0] and changed_experts[1] != experts[1]
    assert run_ids("{experts: [4dgs, stg]}", ["profile=paper"])[0] != base


def test_prune_and_distill_points_start_from_shared_source_runs(tmp_path):
    plan = plan_of(tmp_path, "command: distill\nscenes: [synthetic:kitchen, synthetic:windy]\n"
                             "source: {experts: [4dgs, stg]}\naxes:\n  student: [4dgs, stg]\n  lam: [0.0, 0.5]\n")
    stages = [p.stage for p in plan]
    assert stages == ["experts"] * 4 + ["runs"] * 2 + ["distill"] * 8
    runs = {p.id: p for p in plan if p.stage == "runs"}
    for p in plan[6:]:
        assert p.source in runs and runs[p.source].scene == p.scene and p.depends == (p.source,)
    # a run sweep's point and a prune sweep's source with the same settings are the same point
    prune = plan_of(tmp_path, "command: prune\nscenes: [synthetic:kitchen]\nsource: {experts: [4dgs, stg]}\n"
                              "axes:\n  ratio: [0.5]\n")
    run = plan_of(tmp_path, "command: run\nscenes: [synthetic:kitchen]\nsettings: {experts: [4dgs, stg]}\n")
    assert [p.id for p in prune if p.stage == "runs"] == [p.id for p in run if p.stage == "runs"]
    # --set: a run key goes to the source, a prune key to every point
    plan = plan_of(tmp_path, "command: prune\nsource: {experts: [4dgs, stg]}\naxes:\n  ratio: [0.5]\n",
                   ["profile=paper", "criterion=opacity", "resources.time_min=30"])
    assert plan[-1].identity["config"]["criterion"] == "opacity"
    assert next(p for p in plan if p.stage == "runs").identity["config"]["profile"] == "paper"


@pytest.mark.parametrize("name, points", [("expert_subsets", 16 + 44), ("router_variants", 8 + 36),
                                          ("pruning", 8 + 4 + 48), ("distillation", 8 + 4 + 40)])
def test_ready_made_specs_plan_with_both_profiles(name, points):
    path = REPO / "sweeps" / f"{name}.yaml"
    for overrides in ([], ["profile=paper", "resources.gpus_per_node=1"]):
        spec = load_spec(path, [parse_override(o) for o in overrides])
        plan = build_plan(spec)
        assert len(plan) == points
        profiles = {p.identity["config"]["profile"] for p in plan if p.stage == "runs"}
        assert profiles == {"paper" if overrides else "tiny"}


def test_plan_json_lists_points_and_changes_nothing(tmp_path):
    path = spec_file(tmp_path, "command: run\nsettings: {experts: [4dgs, stg]}\n")
    proc = cli("sweep", "plan", str(path), "--out", str(tmp_path / "sweep"), "--json")
    assert proc.returncode == 0, proc.stderr
    points = json.loads(proc.stdout)
    assert [p["stage"] for p in points] == ["experts", "experts", "runs"]
    assert all(p["state"] == "pending" for p in points)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.yaml"]
