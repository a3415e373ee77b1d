"""One tracked training run: recipe -> data, metrics, trainer -> an MLflow run.

Everything that can reject the user's input (device, data, metrics, classifier) happens in
``prepare`` before a run exists, so bad input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

from pathlib import Path

import mlflow
import requests
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganstop.training import checkpoint, distributed
from ganstop.data.sets import Data, load_data
from ganstop.metrics.scorer import Scorer
from ganstop.paths import cache_root
from ganstop.masking import mask
from ganstop.recipe import Recipe
from ganstop.errors import RecipeError, TrackingLost, first_line
from ganstop.tracking.logger import MlflowLogger
from ganstop.tracking.store import logged_recipe, open_store
from ganstop.training.callbacks import Callback
from ganstop.training.loop import Trainer, TrainResult, resolve_device


@dataclass
class Prepared:
    recipe: Recipe
    device: torch.device
    data: Data
    scorer: Scorer | None  # validation: stopping, best epoch, search (rank 0 only)
    test_scorer: Scorer | None  # test: the final scores only (rank 0 only)


def join(recipe: Recipe) -> torch.device:
    """This process's device; under torchrun, also its place in the group (``distributed``):
    ``auto`` and ``cuda`` then mean this rank's own GPU."""
    device = resolve_device(distributed.device(recipe.train.device))
    if distributed.launched():
        distributed.join(device.type)
        check_batch_split(recipe, distributed.world_size())
    return device


def check_batch_split(recipe: Recipe, processes: int) -> None:
    if recipe.train.batch_size % processes:
        raise RecipeError(f"train.batch_size={recipe.train.batch_size} is the global batch and must split evenly "
                          f"over {processes} processes")


def prepare(recipe: Recipe) -> Prepared:
    """Data, device and scorers; only rank 0 scores, so only rank 0 builds scorers."""
    device = join(recipe)
    data = load_data(recipe)
    if not distributed.is_main():
        return Prepared(recipe, device, data, None, None)
    return Prepared(recipe, device, data, Scorer(recipe, data, device), Scorer(recipe, data.test_split(), device))


def train_in_run(prepared: Prepared, run_id: str, callbacks: list[Callback] = (), progress: bool = True
                 ) -> tuple[TrainResult, MlflowLogger | None]:
    """Train inside the MLflow run ``run_id``; checkpoints go to the local cache. Only rank 0
    tracks: on the other ranks of a data-parallel run the tracker is simply not attached."""
    gpus = None
    if distributed.world_size() > 1:  # every node's GPUs, for the ganstop.gpu tag
        device = prepared.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        gpus = distributed.gather_objects(f"{socket.gethostname()}: {name}")
    logger = MlflowLogger(run_id, prepared.recipe, gpus=gpus) if distributed.is_main() else None
    trainer = Trainer(prepared.recipe, prepared.data, prepared.scorer, checkpoint_dir(run_id),
                      callbacks=[logger, *callbacks] if logger else list(callbacks), device=prepared.device,
                      progress=progress, test_scorer=prepared.test_scorer)
    trainer.resume()
    monitor = node_metrics(run_id)
    try:
        result = trainer.fit()
    except (MlflowException, requests.RequestException) as exc:
        raise TrackingLost(f"lost the tracking store at epoch {trainer.epoch} ({mask(first_line(exc))}); checkpoints are "
                           f"kept in {trainer.checkpoint_dir}; resume with: ganstop train --resume {run_id}") from None
    except BaseException:
        with contextlib.suppress(MlflowException, requests.RequestException):
            if logger:
                logger.flush()  # a pruned, failed or interrupted run keeps its last epoch's metrics
        raise
    finally:
        if monitor is not None:
            monitor.finish()
    if distributed.is_main():
        checkpoint.retain(trainer.checkpoint_dir, prepared.recipe.train.keep_checkpoints)  # finished, model logged
    return result, logger


def node_metrics(run_id: str):
    """MLflow's system metrics of a data-parallel run, one monitor per node (its first local
    rank) under MLflow's ``node_id`` ``node<N>`` (torchrun's GROUP_RANK); None when they are off
    or there is one process, where ``mlflow.start_run`` monitors the only node itself."""
    from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING

    if distributed.world_size() == 1 or distributed.local_rank() != 0 or not MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, resume_logging=True, node_id=f"node{os.environ.get('GROUP_RANK', '0')}")
    monitor.start()
    return monitor


def checkpoint_dir(run_id: str) -> Path:
    return cache_root() / "checkpoints" / run_id


def resumable(run_id: str, world_size: int = 1) -> Recipe:
    """The recipe of a run that can be resumed on ``world_size`` processes: it logged one, left
    a checkpoint here, and trained on as many processes (a different split of the global batch
    would not continue the same run)."""
    folder = checkpoint_dir(run_id)
    if not any((folder / name).is_file() for name in ("last.pt", "last.pt.prev")):
        raise RecipeError(f"no checkpoint of run {run_id} in {folder}: it never finished an epoch on this machine")
    try:
        recipe = logged_recipe(run_id)
    except MlflowException:
        raise RecipeError(f"run {run_id} is not in {mask(mlflow.get_tracking_uri())} or logged no recipe") from None
    trained_on = int(MlflowClient().get_run(run_id).data.params.get("world_size", "1"))
    if trained_on != world_size:
        raise RecipeError(f"run {run_id} trained on {trained_on} process(es); resume it on as many "
                          f"(--nproc {trained_on}), not {world_size}")
    return recipe


def summary(result: TrainResult, run_id: str, model_uri: str | None) -> str:
    best = (f"best {result.monitor} {result.best_value:.4g} at epoch {result.best_epoch}"
            if result.best_epoch is not None else f"no finite {result.monitor} was ever measured")
    model = f"model {model_uri}" if model_uri else "no model logged"
    return (f"run {run_id}: stopped at epoch {result.stopped_epoch} ({result.stop_reason}); {best}; "
            f"{result.seconds:.1f} s; {model}")


def start_run(experiment_name: str | None, run_name: str | None, resume: str | None = None,
              system_metrics: bool | None = None) -> mlflow.ActiveRun:
    """Reopen ``resume``, join the run a launcher created (MLFLOW_RUN_ID: `mlflow run`,
    `ganstop train --nproc`), or start a new one. Under a bare torchrun, a restarted group
    (``--max-restarts``) reopens the run its first attempt started. ``system_metrics``: MLflow's
    own choice (None) for one process; a data-parallel run's nodes each monitor their own
    (``node_metrics``), so its launcher and workers leave it off."""
    open_store()
    if distributed.launched():
        system_metrics = False
    shared = elastic_run()
    if shared is None or resume or os.environ.get("MLFLOW_RUN_ID"):
        return _start(experiment_name, run_name, resume, system_metrics)
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and shared.is_file():
        return mlflow.start_run(run_id=shared.read_text().strip(), log_system_metrics=False)
    run = _start(experiment_name, run_name, resume, system_metrics)
    shared.parent.mkdir(parents=True, exist_ok=True)
    shared.write_text(run.info.run_id)
    return run


def elastic_run() -> Path | None:
    """Where a bare torchrun's attempts share their run id: by the rendezvous id (``--rdzv-id``,
    a fresh one per ``--standalone`` launch); None outside torchrun or with no id."""
    key = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if not distributed.launched() or key in ("", "none"):
        return None
    return cache_root() / "elastic" / f"{key}.run_id"


def _start(experiment_name: str | None, run_name: str | None, resume: str | None,
           system_metrics: bool | None) -> mlflow.ActiveRun:
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if resume:
        if launcher and launcher != resume:  # `mlflow run -P resume=...` made a run we do not need
            MlflowClient().set_tag(launcher, "ganstop.resumed_run", resume)
        return mlflow.start_run(run_id=resume, log_system_metrics=system_metrics)
    if experiment_name and not mlflow.active_run() and not launcher:
        mlflow.set_experiment(experiment_name)
    return mlflow.start_run(run_name=run_name, log_system_metrics=system_metrics)
