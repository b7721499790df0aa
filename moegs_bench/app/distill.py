"""``moegs-bench distill``: one expert of a finished mixture run trained further with the mixture
as its teacher (MoE-GS Eq. 11, :mod:`moegs_bench.training.distill`), and its fair baseline.

The student continues its own training from the final checkpoint in the run (model, densification
statistics and optimiser state; steps ``T+1 .. T+N`` of its own schedule, so its learning rates are
where that schedule ended), or starts from its initialisation (``from_scratch``: ``N`` steps of its
schedule stretched to ``N``). The fair baseline is the same training with the student's own loss
on the ground truth alone: same start, steps, views, schedule and optimiser; only the loss of a
view differs, so the gain is what the teacher adds, not what more steps add.

Teacher renders (the mixture's blend and the student's gate at every training view, at the
mixture's test temperature) are rendered the first time a view is drawn and kept in memory while
they fit ``teacher_cache_bytes`` (each is ``H x W x 4`` floats: 110 KB at 96x72, 16 MB at
1352x1014), then rendered anew each time (one mixture render per view, K expert renders).

Distillation folder (a finished one is a ``train-expert`` folder for ``run --expert-run ID=DIR``)::

    run.json                 what was distilled: the source run, the student and its training, the settings
    checkpoints/latest.pt    periodic checkpoint (a killed distillation resumes from it)
    expert.pt                the student after the extra steps (checkpoint kind "expert")
    renders/test/*.png       its test renders
    results.json             its results record (``extra``: the settings, teacher, source and baseline)

The source run is only read (:mod:`moegs_bench.app.finished`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from moegs_bench.adapters.base import Expert, ExpertConfig
from moegs_bench.adapters.registry import Registry
from moegs_bench.app.finished import FinishedRun, open_finished_run
from moegs_bench.config import ConfigError
from moegs_bench.data.scene import Frame
from moegs_bench.metrics import LpipsMetric
from moegs_bench.results import ResultRecord, read_record, write_record
from moegs_bench.router.config import DistillConfig
from moegs_bench.run_folder import RunFolderError, read_identity, working_in
from moegs_bench.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from moegs_bench.training.distill import DistillHooks, TeacherView
from moegs_bench.training.engine import CheckpointPaths, run_training
from moegs_bench.training.trainer import (FINAL_CKPT, LATEST_CKPT, RESULTS_FILE, ExpertHooks, build_expert,
                                          expert_loop, expert_record)

DISTILL_RUN = "moegs-bench/distill-run"
OWNED = (FINAL_CKPT, RESULTS_FILE, "checkpoints", "renders")
TEACHER_CACHE_BYTES = 2 << 30  # teacher renders kept in memory up to this size (2 GiB)


@dataclass
class DistillResult:
    out_dir: Path
    record: ResultRecord  # the student after the extra steps (baseline: on the ground truth alone)
    reused: bool  # a finished distillation was found and reported


class MixtureTeacher:
    """The trained mixture's blend and one expert's gate at the training views, rendered the first
    time a view is asked for and kept while the cache stays under ``cache_bytes``."""

    def __init__(self, run: FinishedRun, expert_index: int, cache_bytes: int = TEACHER_CACHE_BYTES) -> None:
        self.run, self.k, self.cache_bytes = run, expert_index, cache_bytes
        self.cached: dict[str, TeacherView] = {}
        self.bytes = 0
        self.renders = 0
        self.seconds = 0.0

    @torch.no_grad()
    def view(self, frame: Frame) -> TeacherView:
        hit = self.cached.get(frame.key)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        out = self.run.mixture(frame.camera, self.run.scene.background)  # (eval mode: the test temperature)
        view = TeacherView(out.image.detach(), out.gates[self.k].unsqueeze(-1).detach())  # [H,W,3], [H,W,1]
        size = (view.image.numel() + view.gate.numel()) * view.image.element_size()
        if self.bytes + size <= self.cache_bytes:
            self.cached[frame.key] = view
            self.bytes += size
        self.renders += 1
        self.seconds += time.perf_counter() - t0
        return view

    def summary(self) -> dict[str, Any]:
        return {"renders": self.renders, "seconds": self.seconds, "cached_views": len(self.cached),
                "cached_bytes": self.bytes}


class Distillation:
    """One student of one finished mixture run: the settings it resolves and the trainings it runs
    (the distilled students and their baseline share the opened run and the teacher's renders)."""

    def __init__(self, run: FinishedRun, registry: Registry, student: str) -> None:
        self.cls: type[Expert] = registry.get(student)  # (an unknown or unavailable id: a one-line ExpertError)
        ids = run.mixture.expert_ids
        if student not in ids:
            raise ConfigError("student", f"{student} is not one of the run's experts ({', '.join(ids)})")
        self.run, self.student, self.index = run, student, ids.index(student)
        self.folder = run.expert_folders[student]
        self.identity: dict[str, Any] = read_identity(self.folder) or {}
        self.config: ExpertConfig = self.cls.config_class.from_dict(self.identity["config"], key=f"experts.{student}")
        self.record = read_record(self.folder / RESULTS_FILE)
        self._teacher: MixtureTeacher | None = None

    def steps(self, config: DistillConfig) -> int:
        """The extra training steps: ``config.steps``, else half the student's schedule (continued)
        or the whole of it (from scratch)."""
        if config.steps is not None:
            return config.steps
        n = self.config.train.iterations
        return n if config.from_scratch else max(n // 2, 1)

    def default_name(self, config: DistillConfig) -> str:
        what = "gt" if config.is_baseline else f"lam{config.lam:g}"
        scratch = "-scratch" if config.from_scratch else ""
        return f"{self.run.folder.name}_distill-{self.student}-{what}-{self.steps(config)}{scratch}"

    def teacher(self) -> MixtureTeacher:
        if self._teacher is None:
            self._teacher = MixtureTeacher(self.run, self.index)
        return self._teacher

    def train(self, config: DistillConfig, out_dir: Path, *, baseline: DistillResult | None = None,
              force: bool = False, progress: bool = True, log: Callable[[str], None] = print,
              lpips: LpipsMetric | None = None, wait: bool = False) -> DistillResult:
        """Distil (``config.lam`` set) or train the fair baseline (``lam`` None) into ``out_dir``;
        ``baseline`` (the finished baseline) is recorded beside the student's; ``lpips``: the LPIPS
        of the evaluation (default: AlexNet when installed). ``wait``: when another process works in
        ``out_dir`` (a baseline shared by several distillations), wait for it instead of refusing."""
        if config.student != self.student:
            raise ValueError(f"config is for {config.student}, this distillation's student is {self.student}")
        out_dir = Path(out_dir)
        run = self.run
        if out_dir.resolve() == run.folder or run.folder in out_dir.resolve().parents:
            raise RunFolderError(f"{out_dir}: is in the source run folder {run.folder}, which distill never writes "
                                 "to; choose another --out")
        steps = self.steps(config)
        student_config = self.config.with_iterations(steps) if config.from_scratch else self.config
        start = 0 if config.from_scratch else self.config.train.iterations
        seed, profile = self.identity["seed"], self.identity["profile"]
        settings = {**config.to_dict(), "steps": steps, "start_step": start}
        identity = {"kind": DISTILL_RUN, "expert": self.student, "state_version": self.cls.state_version,
                    "profile": profile, "config": student_config.to_dict(), "scene": run.scene_id,
                    "dataset": run.identity["dataset"], "seed": seed, "source": str(run.folder),
                    "source_created": run.record.provenance.created, "distill": settings}
        with working_in(out_dir, identity, what="distillation", owned=OWNED, force=force, wait=wait, on_wait=log):
            if (out_dir / RESULTS_FILE).is_file():
                log(f"{out_dir}: finished distillation found; reporting it (pass --force to redo)")
                return DistillResult(out_dir, read_record(out_dir / RESULTS_FILE), reused=True)
            expert = build_expert(self.cls, student_config, run.scene, seed)
            bg = run.scene.background
            hooks = (ExpertHooks(expert, bg, seed) if config.is_baseline
                     else DistillHooks(expert, bg, seed, self.teacher(), config.lam))
            what = "ground truth" if config.is_baseline else f"lam {config.lam:g}"
            spec = replace(expert_loop(self.cls, student_config, seed), label=f"{self.student} ({what})",
                           iterations=start + steps)
            paths = CheckpointPaths(latest=out_dir / LATEST_CKPT, final=out_dir / FINAL_CKPT)
            started = self._seed_checkpoint(spec, paths, start)
            if started:
                log(f"{self.student}: continuing its training in {self.folder} (step {start}) for {steps} steps "
                    f"on {what}")
            elif start == 0 and not paths.latest.is_file() and not paths.final.is_file():
                log(f"{self.student}: training from scratch for {steps} steps on {what}")
            outcome = run_training(spec, hooks, run.scene, paths, progress=progress,
                                   log=(lambda _: None) if started else log)  # (not "resuming" from the seed)
            before = 0.0 if config.from_scratch else self.record.timing.train_seconds
            record = expert_record(expert, run.scene, run.scene_id, out_dir, student_config, profile, seed,
                                   outcome.elapsed, lpips=lpips)  # (train seconds: the student's, its extra
            # steps included)
            record = replace(record, extra={**record.extra,
                                            **self._extra(settings, config, baseline, outcome.elapsed - before)})
            write_record(out_dir / RESULTS_FILE, record)
            return DistillResult(out_dir, record, reused=False)

    def _seed_checkpoint(self, spec, paths: CheckpointPaths, start: int) -> bool:
        """A continued training starts as a resumed one: the student's final checkpoint in the run
        (model, densification statistics, optimiser; its step and seconds) is written as this
        folder's periodic checkpoint unless the folder holds a later one. True when written."""
        if start == 0 or paths.latest.is_file() or paths.final.is_file():
            return False
        src = load_checkpoint(self.folder / FINAL_CKPT, kind="expert", identity=spec.identity, config=spec.config,
                              config_defaults=spec.config_defaults)
        save_checkpoint(paths.latest, Checkpoint(kind="expert", identity=spec.identity, config=spec.config,
                                                 step=src.step, finished=False, elapsed=src.elapsed,
                                                 states=src.states, optimizer=src.optimizer))
        return True

    def _extra(self, settings: dict[str, Any], config: DistillConfig, baseline: DistillResult | None,
               seconds: float) -> dict[str, Any]:
        run, src = self.run, self.record
        extra: dict[str, Any] = {
            "variant": "baseline" if config.is_baseline else "distilled", "distill": settings,
            "distill_seconds": seconds,
            "derived_from": {"run": str(run.folder), "folder": str(self.folder), "name": src.name,
                             "psnr": src.metrics.psnr, "ssim": src.metrics.ssim, "num_gaussians": src.num_gaussians,
                             "train_seconds": src.timing.train_seconds},
        }
        if not config.is_baseline:
            extra["teacher"] = {"run": str(run.folder), "name": run.record.name, "psnr": run.record.metrics.psnr,
                                "ssim": run.record.metrics.ssim, **self.teacher().summary()}
        if baseline is not None:
            m = baseline.record.metrics
            extra["baseline"] = {"folder": str(baseline.out_dir), "psnr": m.psnr, "ssim": m.ssim, "lpips": m.lpips}
        return extra


def open_distillation(source: Path, student: str, *, registry: Registry, cache_dir: Path | None,
                      progress: bool = False) -> Distillation:
    """The finished mixture run ``source`` (:func:`~moegs_bench.app.finished.open_finished_run`)
    with ``student``, one of its experts, as the student."""
    return Distillation(open_finished_run(Path(source).resolve(), registry=registry, cache_dir=cache_dir,
                                          progress=progress), registry, student)


__all__ = ["DISTILL_RUN", "DistillResult", "Distillation", "MixtureTeacher", "TEACHER_CACHE_BYTES",
           "open_distillation"]
