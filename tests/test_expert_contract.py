"""``moegs_bench.adapters.testing.check_expert``: a correct expert passes every check, and each
expert below, broken on purpose in one known way, fails the check that covers that part of the
contract, with a reason that names what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertInfo, ParamGroup, SceneInit
from moegs_bench.adapters.testing import CHECKS, check_expert, tiny_scene
from moegs_bench.cameras import Camera
from moegs_bench.gaussians import GaussianState
from moegs_bench.training.config import TrainConfig


@dataclass
class DriftConfig(ExpertConfig):
    velocity_lr: float = 1e-3
    train: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=100, sh_degree=1))


class Drift(Expert):
    """A correct expert: mean(t) = mean + t * velocity."""

    info = ExpertInfo(id="drift", method="Linear drift", paper="(test)", repo="-", description="test expert")
    config_class = DriftConfig
    profiles = {"tiny": DriftConfig(), "paper": DriftConfig(velocity_lr=2e-3)}

    def __init__(self, config: DriftConfig, init: SceneInit) -> None:
        super().__init__(config, init)
        self.add_standard_columns(init)
        self.table.add("velocity", torch.randn(self.num_gaussians, 3) * 0.01)  # [N, 3]

    def extra_param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("velocity", [self.table["velocity"]], self.config.velocity_lr)]

    def velocity(self) -> torch.Tensor:  # [N, 3]
        return self.table["velocity"]

    def gaussians_at(self, when: Camera | float) -> GaussianState:
        t = when.time if isinstance(when, Camera) else float(when)
        tab = self.table
        return self.activated(tab["means"] + t * self.velocity(), tab["scales"], tab["quats"], tab["opacities"])


def _variant(name: str, **members) -> type[Drift]:
    return type(name, (Drift,), {"info": ExpertInfo(id=name.lower(), method=name, paper="(test)", repo="-",
                                                    description="broken on purpose"),
                                "__module__": __name__, **members})


def _detached_velocity(self):
    return self.table["velocity"].detach()


def _log_scales(self, when):
    tab = self.table
    return self.make_state(tab["means"], tab["quats"], tab["scales"], torch.sigmoid(tab["opacities"]))


def _no_extras(self, when):
    g = Drift.gaussians_at(self, when)
    g.extras = {}
    return g


def _outside_table_init(self, config, init):
    Expert.__init__(self, config, init)
    self.add_standard_columns(init)
    self.own_velocity = nn.Parameter(torch.zeros(self.num_gaussians, 3))  # [N, 3] outside the table


def _outside_groups(self):
    return [ParamGroup("velocity", [self.own_velocity], self.config.velocity_lr)]


def _outside_velocity(self):
    return self.own_velocity


def _unseeded_init(self, config, init):
    Drift.__init__(self, config, init)
    gen = torch.Generator()
    gen.seed()  # seeded from the OS: not reproducible
    with torch.no_grad():
        self.table["velocity"].copy_(torch.randn(self.num_gaussians, 3, generator=gen))


def _nan_regularization(self, step):
    return self.table["velocity"].sum() * float("nan")


def _ungrouped_init(self, config, init):
    Drift.__init__(self, config, init)
    self.head = nn.Linear(3, 3)  # used below, but in no optimiser group


def _ungrouped_velocity(self):
    return self.head(self.table["velocity"])


def _prune_without_optimizers(self, remove, optimizers=()):
    self.table.edit_rows(keep=~remove)  # the bug: Adam keeps the old tensors and their moments


def _forget_extent(self, state):
    pass  # the bug: the saved extent is not restored


def _raising_init(self, config, init):
    raise RuntimeError("cannot build on this scene")


BROKEN = {  # class -> (the check that must fail, words its reason must contain)
    _variant("Detached", velocity=_detached_velocity): ("gradients", "no gradient reaches group 'velocity'"),
    _variant("LogScales", gaussians_at=_log_scales): ("gaussians_at", "gaussians_at(t=0), train mode, SH degree 0 "
                                                                     "raised InputError: GaussianState.scales"),
    _variant("NoExtras", gaussians_at=_no_extras): ("gaussians_at", "extras['contract_check']"),
    _variant("OutsideTable", __init__=_outside_table_init, extra_param_groups=_outside_groups,
             velocity=_outside_velocity): ("pruning", "must match the size"),
    _variant("Unseeded", __init__=_unseeded_init): ("determinism", "state 'table.velocity' differs"),
    _variant("NanRegularizer", regularization=_nan_regularization):
        ("training", "before training: regularization(1) is nan"),
    _variant("PruneWithoutOptimizers", prune=_prune_without_optimizers):
        ("pruning", "the optimiser still holds the tensor from before prune"),
    _variant("ForgetsExtent", set_extra_state=_forget_extent): ("state_dict", "'_extra_state' differs"),
    _variant("Ungrouped", __init__=_ungrouped_init, velocity=_ungrouped_velocity):
        ("gradients", "in no optimiser group: ['head.bias', 'head.weight']"),
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return tiny_scene(tmp_path_factory.mktemp("contract") / "kitchen")


def test_correct_expert_passes_every_check_and_keeps_the_callers_rng(scene):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    report = check_expert(Drift, scene=scene)
    assert torch.equal(torch.get_rng_state(), before)
    assert [r.name for r in report.results] == [name for name, _, _ in CHECKS]
    assert report.passed, report.summary()
    assert report.expert_id == "drift" and report.target == f"{__name__}:Drift"
    grads = next(r for r in report.results if r.name == "gradients")
    assert "7 groups reached" in grads.detail and "velocity" in grads.detail


@pytest.mark.parametrize("cls", list(BROKEN), ids=lambda c: c.__name__)
def test_broken_expert_fails_the_check_that_covers_it(cls, scene):
    check, words = BROKEN[cls]
    report = check_expert(cls, scene=scene)
    assert not report.passed
    result = {r.name: r for r in report.results}[check]
    assert result.status == "fail", report.summary()
    assert words in result.detail, result.detail
    assert "\n" not in result.detail
    assert {r.name: r.status for r in report.results}["build"] == "pass"


def test_expert_that_cannot_be_built_skips_the_rest(scene):
    report = check_expert(_variant("Raising", __init__=_raising_init), scene=scene)
    status = {r.name: (r.status, r.detail) for r in report.results}
    assert status["build"] == ("fail", "RuntimeError: cannot build on this scene")
    assert all(s == "skip" for name, (s, _) in status.items() if name != "build")
    assert not report.passed


def test_a_class_that_is_not_an_expert_fails_the_build():
    report = check_expert(dict)  # type: ignore[arg-type]
    assert report.results[0].status == "fail" and "not a subclass" in report.results[0].detail
    assert not report.passed
