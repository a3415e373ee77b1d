"""One tracked training run: recipe -> data, metrics, trainer -> an MLflow run.

Everything that can reject the user's input (device, data, metrics, classifier) happens in
``prepare`` before a run exists, so bad input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from pathlib import Path

import mlflow
import requests
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganstop import checkpoint
from ganstop.data import Data, load_data
from ganstop.metrics.scorer import Scorer
from ganstop.paths import cache_root
from ganstop.masking import mask
from ganstop.recipe import Recipe
from ganstop.errors import RecipeError, TrackingLost, first_line
from ganstop.tracking import MlflowLogger, logged_recipe, open_store
from ganstop.callbacks import Callback
from ganstop.train import Trainer, TrainResult, resolve_device


@dataclass
class Prepared:
    recipe: Recipe
    device: torch.device
    data: Data
    scorer: Scorer  # validation: stopping, best epoch, search
    test_scorer: Scorer  # test: the final scores only


def prepare(recipe: Recipe) -> Prepared:
    device = resolve_device(recipe.train.device)
    data = load_data(recipe)
    return Prepared(recipe, device, data, Scorer(recipe, data, device), Scorer(recipe, data.test_split(), device))


def train_in_run(prepared: Prepared, run_id: str, callbacks: list[Callback] = (), progress: bool = True
                 ) -> tuple[TrainResult, MlflowLogger]:
    """Train inside the active MLflow run ``run_id``; checkpoints go to the local cache."""
    logger = MlflowLogger(run_id, prepared.recipe)
    trainer = Trainer(prepared.recipe, prepared.data, prepared.scorer, checkpoint_dir(run_id),
                      callbacks=[logger, *callbacks], device=prepared.device, progress=progress,
                      test_scorer=prepared.test_scorer)
    trainer.resume()
    try:
        result = trainer.fit()
    except (MlflowException, requests.RequestException) as exc:
        raise TrackingLost(f"lost the tracking store at epoch {trainer.epoch} ({mask(first_line(exc))}); checkpoints are "
                           f"kept in {trainer.checkpoint_dir}; resume with: ganstop train --resume {run_id}") from None
    except BaseException:
        with contextlib.suppress(MlflowException, requests.RequestException):
            logger.flush()  # a pruned, failed or interrupted run keeps its last epoch's metrics
        raise
    checkpoint.retain(trainer.checkpoint_dir, prepared.recipe.train.keep_checkpoints)  # finished, model logged
    return result, logger


def checkpoint_dir(run_id: str) -> Path:
    return cache_root() / "checkpoints" / run_id


def resumable(run_id: str) -> Recipe:
    """The recipe of a run that can be resumed: it logged one and left a checkpoint here."""
    folder = checkpoint_dir(run_id)
    if not any((folder / name).is_file() for name in ("last.pt", "last.pt.prev")):
        raise RecipeError(f"no checkpoint of run {run_id} in {folder}: it never finished an epoch on this machine")
    try:
        return logged_recipe(run_id)
    except MlflowException:
        raise RecipeError(f"run {run_id} is not in {mask(mlflow.get_tracking_uri())} or logged no recipe") from None


def summary(result: TrainResult, run_id: str, model_uri: str | None) -> str:
    best = (f"best {result.monitor} {result.best_value:.4g} at epoch {result.best_epoch}"
            if result.best_epoch is not None else f"no finite {result.monitor} was ever measured")
    model = f"model {model_uri}" if model_uri else "no model logged"
    return (f"run {run_id}: stopped at epoch {result.stopped_epoch} ({result.stop_reason}); {best}; "
            f"{result.seconds:.1f} s; {model}")


def start_run(experiment_name: str | None, run_name: str | None, resume: str | None = None) -> mlflow.ActiveRun:
    """Reopen ``resume``, join the run `mlflow run` created (MLFLOW_RUN_ID), or start a new one."""
    open_store()
    launcher = os.environ.get("MLFLOW_RUN_ID")
    if resume:
        if launcher and launcher != resume:  # `mlflow run -P resume=...` made a run we do not need
            MlflowClient().set_tag(launcher, "ganstop.resumed_run", resume)
        return mlflow.start_run(run_id=resume)
    if experiment_name and not mlflow.active_run() and not launcher:
        mlflow.set_experiment(experiment_name)
    return mlflow.start_run(run_name=run_name)
