"""``moegs-bench prune``: a pruned copy of a finished mixture run, evaluated as ``run`` evaluates.

Prune folder::

    run.json                 what was pruned (the source run folder and its record), how (the settings)
    importance.pt            the per-Gaussian scores of the criterion (the slow part: a killed
                             prune resumes from them)
    experts/<id>.pt          the pruned experts (checkpoint kind "expert")
    router/mixture.pt        the router with the pruned Gaussians' columns removed (kind "router")
    renders/test/*.png       the pruned mixture's test renders
    gates/<view>.png         its gate maps of the first test views
    results/mixture.json     its results record (``extra``: the source, criterion, what was removed)

The source run is only read (:mod:`moegs_bench.app.finished`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moegs_bench.adapters.registry import Registry
from moegs_bench.app.finished import FinishedRun, open_finished_run
from moegs_bench.app.run import MIXTURE_RECORD, ROUTER_FINAL, ROUTER_LATEST, write_gate_maps
from moegs_bench.config import ConfigError
from moegs_bench.metrics import LpipsMetric, storage_mb
from moegs_bench.results import ResultRecord, collect_provenance, read_record, write_record
from moegs_bench.router.baselines import ensemble_baselines
from moegs_bench.router.config import PruneConfig
from moegs_bench.run_folder import RunFolderError, working_in
from moegs_bench.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from moegs_bench.training.evaluate import evaluate

PRUNE_RUN = "moegs-bench/prune-run"
IMPORTANCE_FILE = "importance.pt"
OWNED = (IMPORTANCE_FILE, "experts", "router", "renders", "gates", "results")


@dataclass
class PruneResult:
    out_dir: Path
    source: ResultRecord  # the source run's mixture record
    pruned: ResultRecord
    reused: bool  # a finished prune was found and reported


def default_prune_name(source: Path, config: PruneConfig) -> str:
    amount = f"{config.ratio:g}" if config.ratio is not None else f"below{config.threshold:g}"
    return f"{Path(source).name}_prune-{config.criterion}-{amount}"


def prune_run(source: Path, out_dir: Path, config: PruneConfig, *, registry: Registry, cache_dir: Path | None,
              force: bool = False, progress: bool = True, log: Callable[[str], None] = print,
              lpips: LpipsMetric | None = None) -> PruneResult:
    """Prune the finished mixture run ``source`` into ``out_dir``; see the module doc. ``lpips``:
    the LPIPS of the evaluation (default: AlexNet when installed)."""
    source, out_dir = Path(source).resolve(), Path(out_dir)
    run = open_finished_run(source, registry=registry, cache_dir=cache_dir)
    if out_dir.resolve() == source or source in out_dir.resolve().parents:
        raise RunFolderError(f"{out_dir}: is in the source run folder {source}, which a prune never writes to; "
                             "choose another --out")
    if config.criterion == "gate" and not run.mixture.router.uses_gaussian_weights:
        raise ConfigError("criterion", f"gate: the run's {run.config.router.variant} router has no per-Gaussian "
                                       "router weights to differentiate; use opacity or random")
    identity = {"kind": PRUNE_RUN, "source": str(source), "source_created": run.record.provenance.created,
                "dataset": run.identity["dataset"], "prune": config.to_dict()}
    with working_in(out_dir, identity, what="prune run", owned=OWNED, force=force, bookkeeping=(IMPORTANCE_FILE,)):
        if (out_dir / MIXTURE_RECORD).is_file():
            log(f"{out_dir}: finished prune found; reporting it (pass --force to redo)")
            return PruneResult(out_dir, run.record, read_record(out_dir / MIXTURE_RECORD), reused=True)
        t0 = time.perf_counter()
        scores = _scores(run, config, out_dir / IMPORTANCE_FILE, progress=progress, log=log)
        seconds = time.perf_counter() - t0
        return _prune_and_evaluate(run, config, scores, out_dir, seconds, progress=progress, log=log,
                                   lpips=lpips if lpips is not None else LpipsMetric())


def _scores(run: FinishedRun, config: PruneConfig, path: Path, *, progress: bool,
            log: Callable[[str], None]) -> list[torch.Tensor]:
    """The criterion's scores per expert: read from ``path`` (a resumed prune), else computed and saved."""
    from tqdm import tqdm

    from moegs_bench.router.prune import evenly_spaced, importance

    ids = run.mixture.expert_ids
    if path.is_file():
        try:
            ckpt = load_checkpoint(path, kind="prune", identity={"experts": ids}, config=config.to_dict())
            log(f"importance scores read from {path}")
            return [ckpt.states["scores"][eid] for eid in ids]
        except CheckpointError as e:
            log(f"{e}; computing the scores again")
    frames = evenly_spaced(run.scene.train, config.views)
    times = run.scene.frame_times
    log(f"scoring {sum(e.num_gaussians for e in run.mixture.experts):,} Gaussians by {config.criterion}"
        + (f" over {len(frames)} training views" if config.criterion == "gate" else ""))
    bar = tqdm(total=len(frames), desc=f"importance ({config.criterion})", unit="view", dynamic_ncols=True,
               disable=not progress or config.criterion != "gate", mininterval=1.0)
    try:
        scores = importance(run.mixture, config.criterion, frames, times, background=run.scene.background,
                            seed=config.seed, progress=lambda n: bar.update(n - bar.n))
    finally:
        bar.close()
    save_checkpoint(path, Checkpoint(kind="prune", identity={"experts": ids}, config=config.to_dict(), step=0,
                                     finished=True, elapsed=0.0, states={"scores": dict(zip(ids, scores))}))
    return scores


def _prune_and_evaluate(run: FinishedRun, config: PruneConfig, scores: list[torch.Tensor], out_dir: Path,
                        score_seconds: float, *, progress: bool, log: Callable[[str], None],
                        lpips: LpipsMetric) -> PruneResult:
    from moegs_bench.router.prune import apply_pruning, removal_masks

    mixture = run.mixture
    before = {e.info.id: e.num_gaussians for e in mixture.experts}
    masks = removal_masks(scores, ratio=config.ratio, threshold=config.threshold)
    _check_removal(masks, mixture.expert_ids, config)
    apply_pruning(mixture, masks)
    after = {e.info.id: e.num_gaussians for e in mixture.experts}
    log("pruned " + ", ".join(f"{k}: {before[k]:,} -> {after[k]:,}" for k in before))
    finetune_seconds = _finetune(run, config, out_dir, progress=progress, log=log)
    for e in mixture.experts:
        save_checkpoint(out_dir / "experts" / f"{e.info.id}.pt", Checkpoint(
            kind="expert", identity={"expert": e.info.id, "state_version": e.state_version},
            config=e.config.to_dict(), step=e.config.train.iterations, finished=True, elapsed=0.0,
            states={"model": e.state_dict()}))
    if not config.finetune_steps:  # (a fine-tuning wrote its own final router checkpoint)
        save_checkpoint(out_dir / ROUTER_FINAL, Checkpoint(
            kind="router", identity={"experts": mixture.expert_ids}, config=mixture.config.to_dict(),
            step=mixture.config.iterations, finished=True, elapsed=0.0, states={"router": mixture.router_state()}))

    scene, bg = run.scene, run.scene.background
    log(f"evaluating the pruned mixture on {len(scene.test)} test views")
    ev = evaluate(lambda f: mixture(f.camera, bg).image, scene, out_dir=out_dir / "renders" / "test", lpips=lpips)
    log("evaluating the pruned experts' uniform average and the per-pixel oracle")
    baselines = ensemble_baselines(mixture, scene, lpips=lpips).record(ev.metrics.psnr)
    write_gate_maps(mixture, scene, out_dir / "gates")
    src = run.record
    nbytes = mixture.total_storage_bytes()
    extra: dict[str, Any] = {
        "derived_from": {"folder": str(run.folder), "name": src.name, "psnr": src.metrics.psnr,
                         "ssim": src.metrics.ssim, "num_gaussians": src.num_gaussians,
                         "storage_bytes": src.storage_bytes, "render_fps": src.timing.render_fps},
        "prune": config.to_dict(), "gaussians_before": before, "gaussians_after": after,
        "prune_seconds": score_seconds, "finetune_seconds": finetune_seconds, "render_mode": mixture.config.render_mode,
        "test_temperature": mixture.config.test_temperature, "dataset": scene.state.to_dict(),
        "baselines": baselines,
    }
    record = ResultRecord(
        kind="mixture", name=f"{src.name} pruned ({config.criterion})", scene=src.scene,
        config={**src.config, "prune": config.to_dict()}, seed=src.seed, num_gaussians=sum(after.values()),
        storage_bytes=nbytes, storage_mb=storage_mb(nbytes), metrics=ev.metrics,
        timing=ev.timing(src.timing.train_seconds + score_seconds + finetune_seconds),
        provenance=collect_provenance(mixture.experts[0].device), extra=extra)
    write_record(out_dir / MIXTURE_RECORD, record)
    return PruneResult(out_dir, src, record, reused=False)


def _finetune(run: FinishedRun, config: PruneConfig, out_dir: Path, *, progress: bool,
              log: Callable[[str], None]) -> float:
    """``config.finetune_steps`` router steps on the pruned mixture through the training engine
    (resumable: ``router/latest.pt``), at the rates the run's router schedule ended with; the
    experts train too when the run fine-tuned them. Returns the seconds (0 without fine-tuning)."""
    if not config.finetune_steps:
        return 0.0
    from moegs_bench.router.train import continued, train_router

    mixture = run.mixture
    mixture.config = continued(run.config.router, config.finetune_steps)
    log(f"fine-tuning the pruned router for {config.finetune_steps} steps (w at lr {mixture.config.lr_w:.3g})")
    seconds = train_router(mixture, run.scene, out_dir / ROUTER_LATEST, final=out_dir / ROUTER_FINAL, seed=config.seed,
                           progress=progress, log=log)
    mixture.eval()
    mixture.freeze_experts()
    return seconds


def _check_removal(masks: list[torch.Tensor], ids: list[str], config: PruneConfig) -> None:
    """A threshold (or a ratio on tiny experts) that removes nothing, or every Gaussian of an
    expert, is refused: the result would be the source, or a mixture missing an expert."""
    removed = [int(m.sum()) for m in masks]
    key = "ratio" if config.ratio is not None else "threshold"
    value = config.ratio if config.ratio is not None else config.threshold
    if sum(removed) == 0:
        raise ConfigError(key, f"{value:g} removes no Gaussian of any expert; choose a larger one")
    for eid, m, r in zip(ids, masks, removed):
        if r == m.shape[0]:
            raise ConfigError(key, f"{value:g} removes every Gaussian of {eid}; choose a smaller one")


__all__ = ["IMPORTANCE_FILE", "PRUNE_RUN", "PruneResult", "default_prune_name", "prune_run"]
