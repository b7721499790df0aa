"""``moegs-bench run``: experts (reused or trained), router training, evaluation, gate maps, video.

Run folder::

    run.json                 the resolved configuration (the run's identity)
    experts.json             where each expert came from (cache folder or --expert-run), reused or not
    router/latest.pt         periodic router checkpoint while training (a killed run resumes from it)
    router/mixture.pt        the trained router: per-Gaussian router columns and the pixel MLP
    renders/test/*.png       the mixture's test renders
    gates/<view>.png         gate maps of the first test views: winning expert per pixel (legend)
                             and one heatmap per expert
    video/mixture_gates.mp4  the mixture next to its gate map over time, seen by the first test camera
    results/<expert>.json    each expert's results record (copied from its training run)
    results/mixture.json     the mixture's results record (written last: the run is finished)

Experts come from a shared cache keyed by scene, expert, profile, configuration, seed and the
expert's code (``<cache>/experts/<scene>/<expert>-<profile>-<key>/``, each a ``train-expert`` run
folder), or from finished ``train-expert`` folders named with ``--expert-run``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from moegs_bench.adapters.base import Expert, ExpertConfig
from moegs_bench.adapters.registry import Registry
from moegs_bench.app.config import RunConfig
from moegs_bench.codehash import class_modules, closure_digest
from moegs_bench.config import ConfigError
from moegs_bench.data.scene import Scene
from moegs_bench.data.state import DatasetState
from moegs_bench.io import atomic_write
from moegs_bench.metrics import LpipsMetric, storage_mb
from moegs_bench.results import ResultRecord, collect_provenance, read_record, write_record
from moegs_bench.router.baselines import Score, ensemble_baselines
from moegs_bench.router.config import RouterConfig
from moegs_bench.run_folder import MIXTURE_RUN, RunFolderError, read_identity, working_in
from moegs_bench.training.checkpoint import CheckpointError
from moegs_bench.training.evaluate import evaluate

if TYPE_CHECKING:
    from moegs_bench.training.trainer import TrainedExpert

ROUTER_FINAL = "router/mixture.pt"
ROUTER_LATEST = "router/latest.pt"
MIXTURE_RECORD = "results/mixture.json"
EXPERTS_FILE = "experts.json"
OWNED = (EXPERTS_FILE, "router", "renders", "gates", "video", "results")
GATE_VIEWS = 4  # gate-map figures for the first test views


@dataclass(frozen=True)
class RunRequest:
    """One MoE-GS run: its settings (:class:`~moegs_bench.app.config.RunConfig`, resolved), the
    scene's id (:func:`~moegs_bench.app.config.open_configured_scene`: it names the data in
    records and cache keys) and the experts taken from finished ``train-expert`` folders."""

    config: RunConfig
    scene_spec: str
    expert_runs: tuple[tuple[str, str], ...] = ()  # (expert id, finished train-expert folder)

    @property
    def experts(self) -> tuple[str, ...]:
        return tuple(self.config.experts)

    @property
    def profile(self) -> str:
        return self.config.profile

    @property
    def router(self) -> RouterConfig:
        return self.config.router

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def expert_iterations(self) -> int | None:
        return self.config.expert_iterations

    def identity(self, dataset: DatasetState) -> dict[str, Any]:
        """What ``run.json`` holds: the settings tree, the scene's id and state, the ``--expert-run`` folders."""
        tree = self.config.to_dict()
        return {"kind": MIXTURE_RUN, **tree, "scene": {**tree["scene"], "id": self.scene_spec},
                "dataset": dataset.digest, "expert_runs": {k: v for k, v in self.expert_runs}}


@dataclass
class RunResult:
    out_dir: Path
    experts: list[ResultRecord]
    mixture: ResultRecord
    reused: bool  # a finished run was found and reported


def scene_slug(scene_spec: str) -> str:
    """A folder name for a scene spec (``synthetic:kitchen`` -> ``synthetic-kitchen``)."""
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", scene_spec).strip("-")
    if len(slug) > 60:
        slug = slug[-40:] + "-" + hashlib.sha256(scene_spec.encode()).hexdigest()[:8]
    return slug or "scene"


def default_run_name(scene_spec: str, experts: Sequence[str]) -> str:
    return f"{scene_slug(scene_spec)}_{'+'.join(experts)}"


def expert_code_roots(expert_cls: type[Expert], config: ExpertConfig) -> tuple[str, ...]:
    """The modules whose source closure is an expert training's code: the expert's class and its
    base classes up to Expert, its config class and the module of the training entry point."""
    from moegs_bench.training.trainer import train_expert

    return (*class_modules(expert_cls, Expert), type(config).__module__, train_expert.__module__)


def expert_cache_folder(cache_root: Path, scene_spec: str, expert_cls: type[Expert], config: ExpertConfig,
                        profile: str, seed: int, dataset: DatasetState) -> Path:
    """The shared cache folder of one expert training, keyed by everything that determines its result:
    expert, state version, profile, configuration, scene and the state of its files
    (:mod:`moegs_bench.data.state`), seed, torch version and code (the digest of the source closure of
    :func:`expert_code_roots`, see :mod:`moegs_bench.codehash`): editing the expert or the training code
    it runs through, or replacing the dataset's files, gives a new folder; editing the CLI, the router or
    the reports does not."""
    key = {"expert": expert_cls.info.id, "state_version": expert_cls.state_version, "profile": profile,
           "config": config.to_dict(), "scene": scene_spec, "dataset": dataset.digest, "seed": seed,
           "torch": torch.__version__, "code": closure_digest(expert_code_roots(expert_cls, config))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root / scene_slug(scene_spec) / f"{expert_cls.info.id}-{profile}-{digest}"


def check_expert_run(folder: Path, expert_id: str, scene_spec: str, dataset: DatasetState, *,
                     where: str | None = None) -> dict[str, Any]:
    """The ``run.json`` of a finished ``train-expert`` folder of ``expert_id`` on ``scene_spec`` in
    the state ``dataset`` (an expert trained before the dataset's files changed is refused); errors
    start with ``where`` (default: the ``--expert-run`` option that named the folder)."""
    from moegs_bench.training.trainer import FINAL_CKPT, RESULTS_FILE

    where = f"--expert-run {expert_id}={folder}" if where is None else where
    identity = read_identity(folder)
    if identity is None:
        raise RunFolderError(f"{where}: not a train-expert run folder (no run.json)")
    if identity.get("expert") != expert_id:
        raise RunFolderError(f"{where}: holds expert {identity.get('expert')!r}, not {expert_id!r}")
    if identity.get("scene") != scene_spec:
        raise RunFolderError(f"{where}: trained on scene {identity.get('scene')!r}, this run's scene is "
                             f"{scene_spec!r}")
    if identity.get("dataset") != dataset.digest:
        raise RunFolderError(f"{where}: trained on other files of {scene_spec} (the "
                             "dataset's files changed since, or the folder predates dataset states); retrain it "
                             "with train-expert --force")
    if not (folder / FINAL_CKPT).is_file() or not (folder / RESULTS_FILE).is_file():
        raise RunFolderError(f"{where}: training is not finished (no {FINAL_CKPT} / "
                             f"{RESULTS_FILE}); finish it with train-expert --resume")
    return identity


def run_mixture(
    request: RunRequest, scene: Scene, out_dir: Path, *, registry: Registry, cache_root: Path,
    force: bool = False, retrain_experts: bool = False, progress: bool = True, log: Callable[[str], None] = print,
    lpips: LpipsMetric | None = None,
) -> RunResult:
    """Run (or resume, or report) one MoE-GS experiment into ``out_dir``; see the module doc.

    ``out_dir`` is locked while this runs (a second process is refused); each cache entry is locked
    while its expert is trained or read (a second process waits, then reuses the training).
    ``retrain_experts`` retrains the cache entries this run uses (not ``--expert-run`` folders).
    ``lpips``: the LPIPS every model of the run is reported with (default: AlexNet when installed);
    experts evaluated earlier with another one are evaluated again (their own folders unchanged)."""
    out_dir = Path(out_dir)
    lpips = lpips if lpips is not None else LpipsMetric()
    if len(request.experts) < 2:
        raise ConfigError("experts", f"a mixture needs at least two experts, got {', '.join(request.experts)}")
    classes = [registry.get(e) for e in request.experts]
    runs = dict(request.expert_runs)
    unknown = sorted(set(runs) - set(request.experts))
    if unknown:
        raise ConfigError("experts", f"--expert-run names {', '.join(unknown)}, which is not one of the experts")
    sources = {e: check_expert_run(Path(runs[e]), e, request.scene_spec, scene.state) for e in runs}
    # an expert of a finished training has that training's settings (run.json says so)
    request = replace(request, config=request.config.with_experts({
        e: registry.get(e).config_class.from_dict(ident["config"], key=f"experts.{e}") for e, ident in sources.items()}))
    with working_in(out_dir, request.identity(scene.state), what="mixture run", owned=OWNED, force=force,
                    bookkeeping=(EXPERTS_FILE,)):
        if (out_dir / MIXTURE_RECORD).is_file():
            log(f"{out_dir}: finished run found; reporting it (pass --force to redo)")
            mixture_record = read_record(out_dir / MIXTURE_RECORD)
            held = mixture_record.metrics.lpips_metric
            if held != lpips.metric_id:
                log(f"{out_dir}: its records hold LPIPS {held or 'n/a'}, not the {lpips.metric_id or 'n/a'} asked "
                    "for: pass --force to evaluate it again")
            return RunResult(out_dir, [read_record(out_dir / "results" / f"{e}.json") for e in request.experts],
                             mixture_record, reused=True)
        experts, records = _experts(request, scene, out_dir, classes, sources, cache_root=cache_root,
                                    retrain=retrain_experts, progress=progress, log=log, lpips=lpips)
        return _mixture(request, scene, out_dir, experts, records, progress=progress, log=log, lpips=lpips)


def _experts(request: RunRequest, scene: Scene, out_dir: Path, classes: Sequence[type[Expert]],
             sources: dict[str, dict[str, Any]], *, cache_root: Path, retrain: bool, progress: bool,
             log: Callable[[str], None], lpips: LpipsMetric) -> tuple[list[Expert], list[ResultRecord]]:
    """The run's experts: finished ``--expert-run`` trainings, or cache entries reused, trained or
    resumed (one process at a time per entry); ``experts.json`` records where each came from. Each
    record's LPIPS is ``lpips``'s (:meth:`~moegs_bench.training.trainer.TrainedExpert.with_lpips`)."""
    from moegs_bench.training.trainer import open_trained_expert

    experts, records = [], []
    runs = dict(request.expert_runs)
    known = out_dir / EXPERTS_FILE  # a resumed run keeps what its first attempt found
    provenance: dict[str, Any] = json.loads(known.read_text()) if known.is_file() else {}
    for cls in classes:
        eid = cls.info.id
        config = request.config.experts[eid]  # the profile's (stretched, --set) or the folder's
        if eid in sources:  # (a finished train-expert or distill folder, checked by check_expert_run: only read)
            profile, seed, folder = sources[eid]["profile"], sources[eid]["seed"], Path(runs[eid])
            log(f"{eid}: reusing the finished run in {folder}")
            trained = open_trained_expert(cls, scene, folder, config=config, seed=seed)
        else:
            profile, seed = request.profile, request.seed
            trained, folder = train_cached_expert(cls, config, scene, request.scene_spec, profile=profile, seed=seed,
                                                  cache_root=cache_root, retrain=retrain, progress=progress, log=log,
                                                  lpips=lpips)
        trained = trained.with_lpips(scene, lpips)
        experts.append(trained.expert)
        records.append(trained.record)
        reused = provenance.get(eid, {}).get("reused", trained.reused)
        provenance[eid] = {"folder": str(folder), "reused": reused, "profile": profile,
                           "train_seconds": trained.record.timing.train_seconds}
        _write_json(known, provenance)
    return experts, records


def train_cached_expert(cls: type[Expert], config: ExpertConfig, scene: Scene, scene_id: str, *, profile: str,
                        seed: int, cache_root: Path, retrain: bool = False, progress: bool = True,
                        log: Callable[[str], None] = print, lpips: LpipsMetric | None = None,
                        on_folder: Callable[[Path], None] | None = None) -> tuple[TrainedExpert, Path]:
    """The expert's training in the shared cache (:func:`expert_cache_folder`): reused when
    finished, else trained or resumed there, the entry locked meanwhile (a second process waits
    for it, then reuses it); ``retrain`` trains it again. ``on_folder`` is told the entry's folder
    first. Returns the :class:`~moegs_bench.training.trainer.TrainedExpert` and the folder."""
    from moegs_bench.training.trainer import RESULTS_FILE, train_expert

    eid = cls.info.id
    folder = expert_cache_folder(cache_root, scene_id, cls, config, profile, seed, scene.state)
    if on_folder is not None:
        on_folder(folder)
    finished = (folder / RESULTS_FILE).is_file() and not retrain
    log(f"{eid}: {'reusing the finished run in' if finished else 'training into'} {folder}")
    try:
        trained = train_expert(cls, scene, folder, scene_spec=scene_id, config=config, profile=profile, seed=seed,
                               resume=True, force=retrain, progress=progress, wait=True,
                               log=(lambda _: None) if finished else log,  # (its "--force to retrain" is not ours)
                               lpips=lpips)
    except (CheckpointError, RunFolderError) as e:
        raise RunFolderError(f"{eid}: the cached training in {folder} cannot be used ({e}); pass "
                             "--retrain-experts to retrain it, or remove that folder") from None
    return trained, folder


def _mixture(request: RunRequest, scene: Scene, out_dir: Path, experts: list[Expert], records: list[ResultRecord],
             *, progress: bool, log: Callable[[str], None], lpips: LpipsMetric) -> RunResult:
    """Router training (or resume), evaluation, gate maps and video; the mixture record last."""
    from moegs_bench.router.mixture import Mixture
    from moegs_bench.router.train import train_router

    mixture = Mixture(experts, request.router)  # trained, resumed or loaded (router/mixture.pt) here:
    router_seconds = train_router(mixture, scene, out_dir / ROUTER_LATEST, final=out_dir / ROUTER_FINAL,
                                  seed=request.seed, progress=progress, log=log)
    mixture.eval()

    bg = scene.background
    render = lambda f: mixture(f.camera, bg).image  # noqa: E731 (eval mode: the test temperature)
    log(f"evaluating the mixture on {len(scene.test)} test views")
    ev = evaluate(render, scene, out_dir=out_dir / "renders" / "test", lpips=lpips)
    log("evaluating the experts' uniform average and the per-pixel oracle")
    alone = None  # (fine-tuned experts are compared with the best expert as trained on its own)
    if request.router.finetune_experts:
        alone = {r.name: Score(r.metrics.psnr, r.metrics.ssim, r.metrics.lpips) for r in records}
    baselines = ensemble_baselines(mixture, scene, lpips=lpips).record(ev.metrics.psnr, trained_alone=alone)
    write_gate_maps(mixture, scene, out_dir / "gates")
    write_gate_video(mixture, scene, out_dir / "video" / "mixture_gates.mp4")
    (out_dir / "results").mkdir(exist_ok=True)
    for eid, rec in zip(request.experts, records):
        write_record(out_dir / "results" / f"{eid}.json", rec)
    mixture_record = _mixture_record(mixture, request, ev, records, router_seconds, scene.state, baselines)
    write_record(out_dir / MIXTURE_RECORD, mixture_record)
    return RunResult(out_dir, records, mixture_record, reused=False)


def _mixture_record(mixture, request: RunRequest, ev, records: list[ResultRecord], router_seconds: float,
                    dataset: DatasetState, baselines: dict[str, Any]) -> ResultRecord:
    n = sum(e.num_gaussians for e in mixture.experts)
    router_bytes = mixture.storage_bytes()
    nbytes = sum(r.storage_bytes for r in records) + router_bytes
    expert_seconds = {r.name: r.timing.train_seconds for r in records}
    return ResultRecord(
        kind="mixture", name="moe-gs:" + "+".join(request.experts), scene=request.scene_spec,
        config={"profile": request.profile, "experts": list(request.experts), "router": request.router.to_dict(),
                "expert_iterations": request.expert_iterations},
        seed=request.seed, num_gaussians=n, storage_bytes=nbytes, storage_mb=storage_mb(nbytes),
        metrics=ev.metrics, timing=ev.timing(router_seconds + sum(expert_seconds.values())),
        provenance=collect_provenance(mixture.experts[0].device),
        extra={"router_train_seconds": router_seconds, "expert_train_seconds": expert_seconds,
               "router_storage_bytes": router_bytes, "render_mode": request.router.render_mode,
               "test_temperature": request.router.test_temperature, "dataset": dataset.to_dict(),
               "baselines": baselines},
    )


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


@torch.no_grad()
def write_gate_maps(mixture, scene: Scene, folder: Path, views: int = GATE_VIEWS) -> list[Path]:
    """Gate-map figures (winner map with legend, per-expert heatmaps) of the first test views
    (at the mixture's current temperature: the test one after ``mixture.eval()``)."""
    from moegs_bench.reports.gate_maps import save_gate_figure

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in list(scene.test)[:views]:
        out = mixture(frame.camera, scene.background)
        path = folder / (frame.key.replace("/", "__") + ".png")
        save_gate_figure(path, out.gates, mixture.expert_ids, image=out.image.clamp(0, 1),
                         title=f"{frame.key} (t = {frame.camera.time:.2f})")
        paths.append(path)
    return paths


@torch.no_grad()
def write_gate_video(mixture, scene: Scene, path: Path, fps: int = 10) -> int:
    """The mixture next to its winner map at every frame time, seen by the first test camera
    (at the mixture's current temperature: the test one after ``mixture.eval()``)."""
    from moegs_bench.reports.gate_maps import video_frame, write_video

    camera = scene.test[0].camera
    times = scene.frame_times

    def frames():
        for t in times:
            out = mixture(replace(camera, time=t), scene.background)
            yield video_frame(out.image.clamp(0, 1), out.gates, mixture.expert_ids)

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames(), fps=fps)


__all__ = ["RunFolderError", "RunRequest", "RunResult", "check_expert_run", "default_run_name",
           "expert_cache_folder", "run_mixture", "scene_slug", "train_cached_expert", "write_gate_maps",
           "write_gate_video"]
