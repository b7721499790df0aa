"""Opening a finished ``moegs-bench run`` folder: its settings, scene, experts and trained router,
for the commands that derive new results from it (``prune``; later ``distill``).

Nothing is trained and nothing in the run folder or the expert folders is written: the experts
come from the finished training folders ``experts.json`` names, the router from
``router/mixture.pt``; the scene is reloaded and must be in the state the run used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moegs_bench.adapters.base import Expert
from moegs_bench.adapters.registry import Registry
from moegs_bench.app.config import RunConfig, open_configured_scene
from moegs_bench.app.run import EXPERTS_FILE, MIXTURE_RECORD, ROUTER_FINAL, ROUTER_LATEST, check_expert_run
from moegs_bench.data.scene import Scene
from moegs_bench.results import ResultRecord, read_record
from moegs_bench.run_folder import MIXTURE_RUN, RunFolderError, read_identity, run_kind


@dataclass
class FinishedRun:
    folder: Path
    identity: dict[str, Any]  # its run.json
    config: RunConfig
    scene: Scene
    scene_id: str
    mixture: Any  # moegs_bench.router.mixture.Mixture, trained, in eval mode
    expert_folders: dict[str, Path]  # expert id -> its finished train-expert folder
    record: ResultRecord  # results/mixture.json


def open_finished_run(folder: Path, *, registry: Registry, cache_dir: Path | None, option: str = "RUN_DIR",
                      progress: bool = False) -> FinishedRun:
    """The finished mixture run in ``folder``; a one-line :class:`RunFolderError` naming ``option``
    for a folder that is not one (no run, another kind, unfinished, experts or data changed)."""
    from moegs_bench.router.mixture import Mixture
    from moegs_bench.router.train import train_router

    folder = Path(folder)
    where = f"{option} {folder}"
    if not folder.is_dir():
        raise RunFolderError(f"{where}: no such folder; expected a finished moegs-bench run folder")
    identity = read_identity(folder)
    if identity is None:
        raise RunFolderError(f"{where}: not a run folder (no run.json); expected a finished moegs-bench run folder")
    if run_kind(identity) != MIXTURE_RUN:
        raise RunFolderError(f"{where}: holds a {run_kind(identity) or 'run of another kind'}, not a mixture run "
                             "(moegs-bench run)")
    if not (folder / MIXTURE_RECORD).is_file() or not (folder / ROUTER_FINAL).is_file():
        raise RunFolderError(f"{where}: the run is not finished (no {MIXTURE_RECORD}); finish it by rerunning its "
                             "run command")
    tree = {k: v for k, v in identity.items() if k not in ("kind", "dataset", "expert_runs")}
    tree["scene"] = {k: v for k, v in tree["scene"].items() if k != "id"}
    classes = {eid: registry.get(eid) for eid in tree["experts"]}
    config = RunConfig.from_dict(tree, classes)
    opened = open_configured_scene(config.scene, cache_dir)
    if opened.scene.state.digest != identity.get("dataset"):
        raise RunFolderError(f"{where}: the files of {opened.scene_id} changed since the run (another dataset "
                             "state); rerun the run first")
    folders = _expert_folders(folder, list(classes), where)
    experts = [load_expert_run(classes[eid], opened.scene, folders[eid], opened.scene_id,
                               where=f"{where}: the training of {eid} it used ({folders[eid]})") for eid in classes]
    mixture = Mixture(experts, config.router)
    train_router(mixture, opened.scene, folder / ROUTER_LATEST, final=folder / ROUTER_FINAL, seed=config.seed,
                 progress=progress, log=lambda _: None)  # (loads the final router; trains nothing)
    mixture.eval()
    mixture.freeze_experts()  # (what is derived from the run differentiates the router columns at most)
    return FinishedRun(folder, identity, config, opened.scene, opened.scene_id, mixture, folders,
                       read_record(folder / MIXTURE_RECORD))


def _expert_folders(folder: Path, ids: list[str], where: str) -> dict[str, Path]:
    path = folder / EXPERTS_FILE
    try:
        known = json.loads(path.read_text())
        return {eid: Path(known[eid]["folder"]) for eid in ids}
    except (OSError, ValueError, KeyError, TypeError):
        raise RunFolderError(f"{where}: {EXPERTS_FILE} is missing or does not name every expert's folder") from None


def load_expert_run(cls: type[Expert], scene: Scene, folder: Path, scene_id: str, *,
                    where: str | None = None) -> Expert:
    """The finished training of ``cls`` in ``folder`` (a ``train-expert`` or ``distill`` folder on
    ``scene``, checked by :func:`~moegs_bench.app.run.check_expert_run`; read, never trained)."""
    from moegs_bench.training.trainer import open_trained_expert

    eid = cls.info.id
    ident = check_expert_run(folder, eid, scene_id, scene.state, where=where if where is not None else str(folder))
    config = cls.config_class.from_dict(ident["config"], key=f"experts.{eid}")
    return open_trained_expert(cls, scene, folder, config=config, seed=ident["seed"]).expert
