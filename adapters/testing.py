"""The expert contract as a check anyone can run on any :class:`~moegs_bench.adapters.base.Expert`
subclass (``moegs-bench experts check``; README, "Adding an expert").

:func:`check_expert` builds the expert on a tiny synthetic scene (:func:`tiny_scene`) and runs
each check of :data:`CHECKS`, in order:

* ``build``: the class is an :class:`Expert`, its ``tiny`` profile builds an instance;
* ``config``: ``tiny`` and ``paper`` profiles of ``config_class`` survive ``to_dict`` -> JSON ->
  ``from_dict``;
* ``gradients``: a loss on every output of ``gaussians_at`` gives a finite gradient to every
  optimiser group of ``param_groups()``, and the groups hold every trainable parameter once;
* ``state_dict``: a pruned, perturbed expert's ``state_dict`` loads into a fresh instance built
  on another scene initialisation (another row count ``N``, another extent): the rows resize and
  the state and the Gaussians come back exactly;
* ``pruning``: ``prune`` removes the rows from every column, the attached ones included, and
  from the optimiser's per-row state; a checkpoint with an attached column loads only into an
  expert that attached it;
* ``determinism``: two builds with the same seed have identical state and identical renders;
* ``gaussians_at``: shapes and conventions of the returned state at times 0, 0.37, 1 and at a
  camera, in train and eval mode, at SH degree 0 and the highest (means ``[N, 3]``, quaternions
  ``[N, 4]`` non-zero, linear scales > 0, opacities in [0, 1], SH colours ``[N, K, 3]`` for the
  active degree, attached columns in ``extras``, everything finite);
* ``training``: a few steps of the shared trainer (:func:`moegs_bench.training.trainer.train_expert`)
  finish with finite parameters, a finite test PSNR and a finite regulariser.

A failed check is a finding about the expert, not an error of the checker: the report holds it
with a one-line reason, and the checks after it still run (those that need the build are skipped
when the build fails). Importing this module does not need pytest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moegs_bench.adapters.base import Expert, ExpertConfig, ExpertError, SceneInit
from moegs_bench.cameras import Camera
from moegs_bench.data.scene import PointCloud, Scene
from moegs_bench.gaussians import GaussianState
from moegs_bench.render import render

__all__ = ["CHECKS", "CheckResult", "ContractReport", "ContractViolation", "check_expert", "tiny_scene"]

#: The standard 3DGS columns every expert optimises (the shared densification edits them).
STANDARD_GROUPS = ("means", "sh_dc", "sh_rest", "opacities", "scales", "quats")
#: Name of the column the checks attach (as the router attaches its weights).
ATTACHED = "contract_check"
#: Training steps of the ``training`` check.
TRAIN_STEPS = 4
#: The tiny scene: ``synthetic:kitchen`` at 24 x 16 pixels, two training cameras, one test view,
#: every 20th point of the sparse cloud (150 points).
SCENE_SIZE = {"width": 24, "height": 16, "train_cameras": 2}
POINT_STRIDE = 20

PASS, FAIL, SKIP = "pass", "fail", "skip"


class ContractViolation(AssertionError):
    """A check found that the expert breaks the contract (the message is the one-line reason)."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``status`` is ``pass``, ``fail`` or ``skip``; ``detail`` is what
    was verified (pass) or the one-line reason (fail, skip)."""

    name: str
    status: str
    detail: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass(frozen=True)
class ContractReport:
    """Every check's result for one expert class."""

    expert_id: str
    target: str  # "module:Class"
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when every check passed (a skipped check is not a pass)."""
        return all(r.passed for r in self.results)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def summary(self) -> str:
        """One line per check (``name: status: detail``), for an assertion message or a log."""
        lines = [f"expert {self.expert_id!r} ({self.target}):"]
        lines += [f"  {r.name}: {r.status}: {r.detail}" for r in self.results]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.expert_id, "target": self.target, "passed": self.passed,
                "checks": [dataclasses.asdict(r) for r in self.results]}


# ---------------------------------------------------------------------------------- the scene
def tiny_scene(root: Path, *, frames: int = 10) -> Scene:
    """Write ``synthetic:kitchen`` at a tiny size into ``root`` (a new or empty folder) and load
    it with every 20th point of its sparse cloud and a single test view: seconds of CPU per check.
    ``frames`` must cover the expert's needs (10 is enough for every built-in expert)."""
    from moegs_bench.data import load_scene
    from moegs_bench.data.synthetic import generate

    generate(Path(root), "kitchen", frames=frames, **SCENE_SIZE)
    scene = load_scene(Path(root))
    pts = scene.points
    scene.points = PointCloud(pts.xyz[::POINT_STRIDE].clone(), pts.rgb[::POINT_STRIDE].clone(), pts.source)
    scene.test = scene.test[:1]  # evaluation runs its code path, quality is not under test
    return scene


# ---------------------------------------------------------------------------------- the checks
@dataclass
class _Context:
    """What every check needs: the class, its config, the scene and how to build and prepare."""

    cls: type[Expert]
    config: ExpertConfig  # of the profile
    profile: str
    scene: Scene
    init: SceneInit
    prepare: Callable[[Expert], None]
    seed: int
    train_steps: int
    workdir: Path

    def build(self, init: SceneInit | None = None, seed: int | None = None) -> Expert:
        torch.manual_seed(self.seed if seed is None else seed)
        return self.cls(self.config, self.init if init is None else init)

    def prepared(self) -> Expert:
        expert = self.build()
        self.prepare(expert)
        return expert

    @property
    def camera(self) -> Camera:
        """A training camera mid-sequence (e-d3dgs-like experts use its id)."""
        train = self.scene.train
        return train[len(train) // 2].camera


def _default_prepare(expert: Expert) -> None:
    """Every stage switched on: the hooks of the last training step."""
    expert.on_step(expert.config.train.iterations)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ContractViolation(message)


def _states_equal(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """None when two state dicts hold the same keys and exactly the same values, else the first
    difference."""
    if a.keys() != b.keys():
        return f"keys differ: {sorted(set(a) ^ set(b))}"
    for k, v in a.items():
        w = b[k]
        if isinstance(v, Tensor):
            if not (isinstance(w, Tensor) and v.shape == w.shape and torch.equal(v, w)):
                return f"{k!r} differs"
        elif v != w:
            return f"{k!r} differs ({v!r} vs {w!r})"
    return None


def _gaussian_fields(g: GaussianState) -> Iterator[tuple[str, Tensor]]:
    yield from (("means", g.means), ("quats", g.quats), ("scales", g.scales), ("opacities", g.opacities),
                ("colors", g.colors))
    yield from ((f"extras[{k!r}]", v) for k, v in g.extras.items())


def _same_gaussians(a: GaussianState, b: GaussianState) -> str | None:
    if a.extras.keys() != b.extras.keys() or a.sh_degree != b.sh_degree:
        return "different extras or SH degree"
    for (name, x), (_, y) in zip(_gaussian_fields(a), _gaussian_fields(b)):
        if x.shape != y.shape or not torch.equal(x.detach(), y.detach()):
            return f"{name} differ"
    return None


def _check_build(ctx: _Context) -> str:
    expert = ctx.build()
    _require(isinstance(expert, Expert), f"{ctx.cls.__name__} is not an Expert subclass")
    _require(expert.num_gaussians > 0, "the built expert has no Gaussians")
    return f"profile {ctx.profile!r} on {ctx.init.points.shape[0]} points: {expert.num_gaussians} Gaussians"


def _check_config(ctx: _Context) -> str:
    cls = ctx.cls
    missing = {"tiny", "paper"} - set(cls.profiles)
    _require(not missing, f"profiles lack {sorted(missing)} (every expert ships 'tiny' and 'paper')")
    for name in ("tiny", "paper"):
        cfg = cls.profile(name)
        _require(isinstance(cfg, cls.config_class),
                 f"profile {name!r} is a {type(cfg).__name__}, not the config_class {cls.config_class.__name__}")
        data = json.loads(json.dumps(cfg.to_dict()))
        back = cls.config_class.from_dict(data)
        _require(back == cfg and type(back) is type(cfg),
                 f"profile {name!r}: from_dict(to_dict()) differs from the profile")
    return f"profiles tiny, paper of {cls.config_class.__name__}: to_dict -> JSON -> from_dict exact"


def _check_gradients(ctx: _Context) -> str:
    expert = ctx.prepared()
    expert.train()
    g = expert.gaussians_at(ctx.camera)
    gen = torch.Generator().manual_seed(7)
    loss = sum((torch.randn(t.shape, generator=gen) * t).sum() for t in (g.means, g.quats, g.scales, g.opacities,
                                                                        g.colors))
    loss.backward()
    groups = expert.param_groups()
    names = [grp.name for grp in groups]
    dup = sorted({n for n in names if names.count(n) > 1})
    _require(not dup, f"param_groups() repeats the group name(s) {dup}")
    missing = [n for n in STANDARD_GROUPS if n not in names]
    _require(not missing, f"param_groups() lacks the standard group(s) {missing} (add_standard_columns builds them)")
    zero = []
    for grp in groups:
        _require(bool(grp.params), f"group {grp.name!r} has no parameters")
        grads = [p.grad for p in grp.params if p.grad is not None]
        _require(bool(grads), f"no gradient reaches group {grp.name!r} (is it used by gaussians_at, or detached?)")
        _require(all(bool(torch.isfinite(gr).all()) for gr in grads), f"group {grp.name!r}: non-finite gradient")
        if all(not bool(gr.any()) for gr in grads):
            zero.append(grp.name)
    in_groups = [id(p) for grp in groups for p in grp.params]
    _require(len(in_groups) == len(set(in_groups)), "a parameter is in more than one optimiser group")
    named = {id(p): n for n, p in expert.named_parameters() if p.requires_grad}
    orphans = sorted(n for k, n in named.items() if k not in set(in_groups))
    _require(not orphans, f"trainable parameter(s) in no optimiser group: {orphans}")
    _require(set(in_groups) <= set(named), "an optimiser group holds a parameter that is not the expert's")
    note = f" (all-zero gradient, e.g. unused rows: {', '.join(zero)})" if zero else ""
    return f"{len(groups)} groups reached: {', '.join(names)}{note}"


@torch.no_grad()
def _perturb(expert: Expert) -> None:
    for p in expert.parameters():
        if p.requires_grad:
            p.add_(torch.randn_like(p) * 0.01)


def _check_state_dict(ctx: _Context) -> str:
    src = ctx.prepared()
    _perturb(src)
    src.active_sh_degree.fill_(src.max_sh_degree)
    n = src.num_gaussians
    src.prune(torch.arange(n) % 3 == 0)
    _require(src.num_gaussians == n - len(range(0, n, 3)), f"prune left {src.num_gaussians} of {n} rows, "
             f"expected {n - len(range(0, n, 3))}")
    state = src.state_dict()

    pts = ctx.init.points[1::2]
    other = dataclasses.replace(ctx.init, points=pts, colors=ctx.init.colors[1::2], extent=ctx.init.extent * 3.5)
    dst = ctx.build(other, seed=ctx.seed + 999)
    _require(dst.num_gaussians != src.num_gaussians, "test set-up: the second build has the same row count")
    before = dst.num_gaussians
    dst.load_state_dict(state)
    _require(dst.num_gaussians == src.num_gaussians,
             f"after load_state_dict the expert has {dst.num_gaussians} rows, the checkpoint {src.num_gaussians}")
    diff = _states_equal(state, dst.state_dict())
    _require(diff is None, f"state_dict after the round trip: {diff}")
    _require(dst.spatial_lr_scale == src.spatial_lr_scale,
             f"spatial_lr_scale is {dst.spatial_lr_scale} after loading, the checkpoint's is {src.spatial_lr_scale} "
             "(the extent must be saved, e.g. in get_extra_state)")
    src.eval()
    dst.eval()
    with torch.no_grad():
        for when in (0.3, ctx.camera):
            diff = _same_gaussians(src.gaussians_at(when), dst.gaussians_at(when))
            _require(diff is None, f"gaussians_at after the round trip: {diff}")
    return f"{src.num_gaussians} rows loaded into an expert of {before} rows: identical state and Gaussians"


def _check_pruning(ctx: _Context) -> str:
    expert = ctx.prepared()
    expert.train()
    n = expert.num_gaussians
    column = torch.arange(n * 3, dtype=torch.float32).view(n, 3)  # [N, 3]: row i holds 3i, 3i+1, 3i+2
    expert.attach(ATTACHED, column)
    _require(ATTACHED in expert.gaussians_at(0.2).extras, "an attached column is missing from gaussians_at().extras")
    _require(all(p is not expert.table[ATTACHED] for grp in expert.param_groups() for p in grp.params),
             "the attached column is in an optimiser group (param_groups must hold the expert's own tensors only)")
    groups = expert.param_groups()
    optimizer = torch.optim.Adam([{"params": grp.params, "lr": grp.lr, "name": grp.name} for grp in groups])
    g = expert.gaussians_at(ctx.camera)
    (g.means.square().sum() + g.opacities.sum() + g.colors.sum()).backward()
    optimizer.step()  # Adam moments now exist for every reached column
    columns = {k: v.detach().clone() for k, v in expert.table.items()}
    moments = {k: optimizer.state[v]["exp_avg"].clone() for k, v in expert.table.items() if v in optimizer.state}
    remove = torch.zeros(n, dtype=torch.bool)
    remove[::7] = True
    remove[-1] = True
    keep = ~remove
    expert.prune(remove, [optimizer])
    k = int(keep.sum())
    _require(expert.num_gaussians == k, f"prune of {n - k} rows left {expert.num_gaussians} rows, expected {k}")
    for name, old in columns.items():
        now = expert.table[name].detach() if name in expert.table else None
        _require(now is not None and torch.equal(now, old[keep]), f"column {name!r}: rows differ from the kept rows")
    held = {id(p) for grp in optimizer.param_groups for p in grp["params"]}
    for name, old in moments.items():
        param = expert.table[name]
        _require(id(param) in held, f"column {name!r}: the optimiser still holds the tensor from before prune")
        _require(torch.equal(optimizer.state[param]["exp_avg"], old[keep]),
                 f"column {name!r}: the optimiser's per-row state does not follow the kept rows")
    g = expert.gaussians_at(0.2)
    _require(g.num_gaussians == k, f"gaussians_at after prune has {g.num_gaussians} rows, expected {k}")
    _require(torch.equal(g.extras[ATTACHED].detach(), column[keep]), "the attached column in extras lost its rows")

    state = expert.state_dict()
    fresh = ctx.build()
    try:
        fresh.load_state_dict(state)
    except ExpertError as exc:
        _require(ATTACHED in str(exc), f"the refusal to load an unattached column does not name it: {exc}")
    else:
        raise ContractViolation("a checkpoint with an attached column loaded into an expert that did not attach it")
    fresh.attach(ATTACHED, torch.zeros(fresh.num_gaussians, 3))
    fresh.load_state_dict(state)
    _require(torch.equal(fresh.attached()[ATTACHED].detach(), column[keep]),
             "the attached column did not come back from the checkpoint")
    return (f"{n - k} of {n} rows removed from {len(columns)} columns (1 attached) and from Adam's state; "
            "the column reloads only where attached")


def _check_determinism(ctx: _Context) -> str:
    a, b = ctx.prepared(), ctx.prepared()
    diff = _states_equal(a.state_dict(), b.state_dict())
    _require(diff is None, f"two builds with seed {ctx.seed}: state {diff}")
    a.eval()
    b.eval()
    with torch.no_grad():
        ga, gb = a.gaussians_at(ctx.camera), b.gaussians_at(ctx.camera)
        diff = _same_gaussians(ga, gb)
        _require(diff is None, f"two builds with seed {ctx.seed}: gaussians_at {diff}")
        _require(torch.equal(render(ga, ctx.camera)[0], render(gb, ctx.camera)[0]),
                 f"two builds with seed {ctx.seed}: the renders differ")
    return f"two builds with seed {ctx.seed}: identical state ({len(a.state_dict())} entries) and render"


def _conventions(g: Any, expert: Expert, where: str) -> None:
    _require(isinstance(g, GaussianState), f"{where}: returned a {type(g).__name__}, not a GaussianState")
    n = expert.num_gaussians
    _require(g.num_gaussians == n, f"{where}: {g.num_gaussians} Gaussians, the table has {n} rows")
    shapes = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
    for name, shape in shapes.items():
        got = tuple(getattr(g, name).shape)
        _require(got == shape, f"{where}: {name} is {list(got)}, expected {list(shape)}")
    deg = int(expert.active_sh_degree)
    _require(g.sh_degree == deg, f"{where}: sh_degree {g.sh_degree}, the active degree is {deg}")
    c = tuple(g.colors.shape)
    _require(len(c) == 3 and c[0] == n and c[2] == 3 and c[1] >= (deg + 1) ** 2,
             f"{where}: colors is {list(c)}, expected SH coefficients [{n}, >={(deg + 1) ** 2}, 3]")
    for name, t in _gaussian_fields(g):
        _require(bool(torch.isfinite(t).all()), f"{where}: {name} has non-finite values")
    _require(bool((g.quats.norm(dim=-1) > 0).all()), f"{where}: a quaternion is zero")
    _require(bool((g.scales > 0).all()), f"{where}: scales must be linear and > 0 (exp of the log-scales)")
    _require(bool(((g.opacities >= 0) & (g.opacities <= 1)).all()),
             f"{where}: opacities must lie in [0, 1] (sigmoid of the logits)")
    _require(ATTACHED in g.extras and torch.equal(g.extras[ATTACHED].detach(), expert.table[ATTACHED].detach()),
             f"{where}: extras[{ATTACHED!r}] does not hold the attached column")


def _check_gaussians_at(ctx: _Context) -> str:
    expert = ctx.prepared()
    expert.attach(ATTACHED, torch.randn(expert.num_gaussians, 2, generator=torch.Generator().manual_seed(3)))
    cam = ctx.camera
    whens: list[tuple[str, float | Camera]] = [("t=0", 0.0), ("t=0.37", 0.37), ("t=1", 1.0),
                                               (f"camera {cam.camera_id} at t={cam.time:.2f}", cam)]
    degrees = sorted({0, expert.max_sh_degree})
    count = 0
    for mode in ("train", "eval"):
        expert.train(mode == "train")
        for deg in degrees:
            expert.active_sh_degree.fill_(deg)
            for label, when in whens:
                where = f"gaussians_at({label}), {mode} mode, SH degree {deg}"
                try:
                    with torch.no_grad():
                        g = expert.gaussians_at(when)
                except Exception as exc:  # noqa: BLE001 - say which call raised
                    raise ContractViolation(f"{where} raised {_one_line(exc)}") from exc
                _conventions(g, expert, where)
                count += 1
    return (f"{count} calls (times 0, 0.37, 1 and a Camera; train and eval; SH degree "
            f"{' and '.join(map(str, degrees))}): shapes, ranges, extras")


def _check_regularization(expert: Expert, step: int, when: str) -> str:
    """The loss term of ``regularization(step)``: None or a finite scalar (else the loss is not finite)."""
    with torch.no_grad():
        reg = expert.regularization(step)
    if reg is None:
        return "no regulariser"
    _require(isinstance(reg, Tensor) and reg.numel() == 1, f"{when}: regularization({step}) returned "
             f"{type(reg).__name__} {list(getattr(reg, 'shape', []))}, expected a scalar tensor or None")
    _require(bool(torch.isfinite(reg).all()), f"{when}: regularization({step}) is {float(reg)}")
    return f"regulariser {float(reg):.3g}"


def _check_training(ctx: _Context) -> str:
    from moegs_bench.training.trainer import train_expert

    steps = ctx.train_steps
    fresh = ctx.prepared()
    fresh.train()
    for step in (1, ctx.config.train.iterations):
        _check_regularization(fresh, step, "before training")
    config = ctx.config.with_iterations(steps)
    try:
        result = train_expert(ctx.cls, ctx.scene, ctx.workdir / "training", scene_spec="contract-check",
                              config=config, profile=ctx.profile, seed=ctx.seed, progress=False, log=lambda _: None)
    except Exception as exc:  # noqa: BLE001 - reported with where it happened
        raise ContractViolation(f"{steps} steps of the shared trainer raised {_one_line(exc)}") from exc
    expert = result.expert
    bad = [n for n, t in [*expert.named_parameters(), *expert.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    _require(not bad, f"after {steps} training steps, non-finite values in {bad[:5]}")
    psnr = result.record.metrics.psnr
    _require(psnr is not None and math.isfinite(psnr), f"after {steps} training steps, the test PSNR is {psnr}")
    expert.train()
    reg = _check_regularization(expert, steps, f"after {steps} training steps")
    return (f"{steps} steps of the shared trainer: {expert.num_gaussians} Gaussians, finite parameters, "
            f"test PSNR {psnr:.2f} dB, {reg}")


#: The checks in the order they run: (name, what it verifies, function returning a pass detail).
CHECKS: tuple[tuple[str, str, Callable[[_Context], str]], ...] = (
    ("build", "the tiny profile builds an expert", _check_build),
    ("config", "profiles tiny/paper, config to_dict/from_dict round trip", _check_config),
    ("gradients", "gradients reach every optimiser group", _check_gradients),
    ("state_dict", "state_dict round trip across a different N", _check_state_dict),
    ("pruning", "prune removes rows from every column, attached ones and optimiser state included", _check_pruning),
    ("determinism", "same seed: identical state and render", _check_determinism),
    ("gaussians_at", "shapes and conventions of gaussians_at", _check_gaussians_at),
    ("training", "a few steps of the shared trainer: finite results", _check_training),
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, ContractViolation) else f"{type(exc).__name__}: {text}"


def _warm_up_optimizer() -> None:
    """One Adam step on a scalar: the first step of a process imports torch's compiler stack
    (seconds), which would otherwise show as the time of the first check that steps."""
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.ones(1)
    torch.optim.Adam([p]).step()


def _target(cls: type) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', getattr(cls, '__name__', '?'))}"


def check_expert(
    cls: type[Expert], *, scene: Scene | None = None, profile: str = "tiny",
    prepare: Callable[[Expert], None] | None = None, seed: int = 0, train_steps: int = TRAIN_STEPS,
    workdir: Path | None = None, on_result: Callable[[CheckResult], None] | None = None,
) -> ContractReport:
    """Run every check of :data:`CHECKS` on ``cls`` and return the report (never raises for a
    broken expert: each failure is a :class:`CheckResult` with its reason).

    ``scene``: the scene to build on (default: :func:`tiny_scene` in a temporary folder; pass one
    to share it between several experts). ``prepare`` switches on every part of a built expert
    before the checks (default: ``on_step`` of the last training step; e.g. also convert some
    Gaussians to dynamic ones). ``workdir`` holds the training run (default: a temporary folder).
    ``on_result`` is called after each check (progress display). The caller's torch random state
    is left as it was.
    """
    id_ = getattr(getattr(cls, "info", None), "id", None) or getattr(cls, "__name__", "?")
    results: list[CheckResult] = []

    def record(result: CheckResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    with tempfile.TemporaryDirectory(prefix="moegs-contract-") as tmp, torch.random.fork_rng(devices=[]):
        root = Path(tmp) if workdir is None else Path(workdir)
        t0 = time.perf_counter()
        ctx: _Context | None = None
        try:
            if not (isinstance(cls, type) and issubclass(cls, Expert)):
                raise ContractViolation(f"{_target(cls)} is not a subclass of moegs_bench.adapters.base.Expert")
            if scene is None:
                scene = tiny_scene(root / "scene", frames=max(10, int(cls.min_frames)))
            ctx = _Context(cls=cls, config=cls.profile(profile), profile=profile, scene=scene,
                           init=SceneInit.from_scene(scene), prepare=prepare or _default_prepare, seed=seed,
                           train_steps=train_steps, workdir=root)
            _warm_up_optimizer()
        except Exception as exc:  # noqa: BLE001 - the reason goes into the report
            record(CheckResult("build", FAIL, _one_line(exc), time.perf_counter() - t0))
        for name, _, fn in CHECKS:
            if ctx is None:
                if name != "build":
                    record(CheckResult(name, SKIP, "not run: the expert cannot be built", 0.0))
                continue
            t0 = time.perf_counter()
            try:
                detail = fn(ctx)
            except Exception as exc:  # noqa: BLE001 - a broken expert is a finding, not a crash
                record(CheckResult(name, FAIL, _one_line(exc), time.perf_counter() - t0))
                if name == "build":
                    ctx = None
            else:
                record(CheckResult(name, PASS, detail, time.perf_counter() - t0))
    return ContractReport(expert_id=str(id_), target=_target(cls), results=tuple(results))
