"""The objective of a study over the recipe's ``search:`` section: one nested MLflow run per trial.

The study is the source of truth and MLflow mirrors it: each trial's run carries the
trial's number and state, the study's user attrs carry the parent run id, and whichever
worker *creates* the study (an atomic insert in the storage) creates that parent run, so
workers that start at the same moment still find one parent.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import mlflow
import optuna
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from ganstop import recipe as rc
from ganstop.training import distributed
from ganstop.tracking import runner
from ganstop.masking import mask
from ganstop.errors import RecipeError
from ganstop.recipe import Recipe
from ganstop.stopping.criteria import StopReason
from ganstop.training.callbacks import Callback

from ganstop.study.space import SearchSpace, charged
from ganstop.study.tags import PARENT_ATTR, RUN_ATTR, TAG_ERROR, TAG_PARENT, TAG_PRUNED_EPOCH, TAG_ROLE, TAG_STATE, TAG_STUDY, TAG_TRIAL

PARENT_WAIT_SECONDS = 60.0


class OptunaPruning(Callback):
    """Reports, at each validation, that check's own objective (its metric plus the compute charge
    so far: the final value's scale) and raises TrialPruned when the pruner says so. Each check's
    value, not the best so far, as plain Optuna users report: a best-so-far staircase stalls
    Optuna's patient pruner and hides the check noise ForecastPruner tells near ties apart by
    (fed one, it kept the ring8 table's best in 75% of trial orders; docs/studies.md)."""

    def __init__(self, trial: optuna.Trial, metric: str, objective: "Objective"):
        self.trial, self.metric, self.objective, self.pruned_epoch = trial, metric, objective, None
        self._stopping, self._last_epoch = False, math.inf

    def on_train_start(self, trainer) -> None:
        self._last_epoch = trainer.recipe.train.max_epochs

    def on_validation_end(self, epoch: int, metrics: dict[str, float], samples, check) -> None:
        self._stopping = check.stop is not None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        # After the MLflow logger's on_epoch_end (callback order), so pruned epochs are logged.
        value = logs.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(self.objective.value(value, epoch), epoch)
        # a trial that ended itself or reached its last epoch completes: pruning it then saves
        # nothing and would throw away its best checkpoint (its last check may be its worst)
        if not self._stopping and epoch < self._last_epoch and self.trial.should_prune():
            self.pruned_epoch = epoch
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


@dataclass
class Objective:
    """One trial: sample, train in a nested MLflow run, return quality plus the compute charge."""

    base: Recipe
    space: SearchSpace
    metric: str
    mode: str
    parent_run_id: str
    experiment_id: str
    study_name: str
    quality_only: bool = False
    client: MlflowClient = field(default_factory=MlflowClient)

    def __call__(self, trial: optuna.Trial) -> float:
        values = self.space.suggest(trial)
        run = self.client.create_run(self.experiment_id, run_name=f"{self.study_name}-trial-{trial.number}",
                                     tags=resolve_tags({TAG_PARENT: self.parent_run_id, TAG_STUDY: self.study_name,
                                                        TAG_TRIAL: str(trial.number), TAG_ROLE: "trial",
                                                        TAG_STATE: "RUNNING"}))
        run_id = run.info.run_id
        trial.set_user_attr(RUN_ATTR, run_id)
        self.client.log_batch(run_id, params=[Param("trial_number", str(trial.number)),
                                              *(Param(k, str(v)) for k, v in values.items())])
        pruning = OptunaPruning(trial, self.metric, self)
        distributed.broadcast((values, run_id))  # `tune --nproc`: the other ranks train this trial too
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            try:
                recipe = rc.load(None, list(values.items()), base=self.base)
                result, _ = runner.train_in_run(runner.prepare(recipe), run_id, callbacks=[pruning], progress=False)
            except optuna.TrialPruned:
                trial.set_user_attr("epochs", pruning.pruned_epoch)
                self.client.set_tag(run_id, TAG_PRUNED_EPOCH, str(pruning.pruned_epoch))
                self._end(run_id, "PRUNED", "FINISHED")
                raise
            except KeyboardInterrupt:
                self._end(run_id, "FAIL", "KILLED", "interrupted (Ctrl-C)")
                raise
            except Exception as exc:
                self._end(run_id, "FAIL", "FAILED", mask(f"{type(exc).__name__}: {exc}"))
                raise
        trial.set_user_attr("epochs", result.stopped_epoch)
        trial.set_user_attr("stop_reason", result.stop_reason)
        if result.stop_reason in (StopReason.NON_FINITE_LOSS, StopReason.NON_FINITE_METRIC):
            # Diverged settings are bad settings: PRUNED keeps the last reported value for the
            # sampler (FAIL would teach it nothing) and keeps the trial out of best-trial choice.
            self.client.set_tag(run_id, TAG_PRUNED_EPOCH, str(result.stopped_epoch))
            self._end(run_id, "PRUNED", "FINISHED", f"diverged: {result.stop_reason}")
            raise optuna.TrialPruned(f"diverged at epoch {result.stopped_epoch} ({result.stop_reason})")
        best = result.history[result.best_epoch - 1].get(self.metric) if result.best_epoch else None
        if best is None or not math.isfinite(best):
            self._end(run_id, "FAIL", "FAILED", f"no finite {self.metric} was measured ({result.stop_reason})")
            raise RuntimeError(f"trial {trial.number}: no finite {self.metric} ({result.stop_reason})")
        trial.set_user_attr("best_metric", best)
        value = self.value(best, result.stopped_epoch)
        self.client.log_metric(run_id, "objective", value)
        self._end(run_id, "COMPLETE", "FINISHED")
        return value

    def value(self, best: float, epochs: int) -> float:
        """Quality, charged ``compute_weight`` metric units for using the whole epoch budget."""
        if self.quality_only:
            return best
        return charged(best, epochs, self.base.train.max_epochs, self.space.compute_weight, self.mode)

    def _end(self, run_id: str, state: str, status: str, error: str | None = None) -> None:
        self.client.set_tag(run_id, TAG_STATE, state)
        if error:
            self.client.set_tag(run_id, TAG_ERROR, error[:5000])
        active = mlflow.active_run()
        if active and active.info.run_id == run_id:
            mlflow.end_run(status)  # else the `with start_run` block would overwrite it with FAILED
        else:
            self.client.set_terminated(run_id, status)


def follow(base: Recipe) -> None:
    """A rank other than 0 of `tune --nproc`: train each trial rank 0 samples (its values and
    run arrive by broadcast, as optuna-integration's TorchDistributedTrial shares them) until
    rank 0 says the study is done. Rank 0 alone talks to Optuna and MLflow, and its pruner's
    word stops every rank through the loop's shared stop."""
    while (trial := distributed.broadcast(None)) is not None:
        values, run_id = trial
        try:
            recipe = rc.load(None, list(values.items()), base=base)
        except RecipeError:
            continue  # rank 0 fails the same trial before training it
        runner.train_in_run(runner.prepare(recipe), run_id, progress=False)


def open_study(name: str, storage, sampler, pruner, direction: str, experiment_id: str,
               client: MlflowClient) -> tuple[optuna.Study, str, bool]:
    """Create the study with its parent run, or join it: (study, parent run id, created).

    The parent run is made *before* ``create_study``, whose atomic insert elects one process;
    the winner records its run in the study at once and the losers delete theirs. So joiners
    wait for one database write, never for a slow run creation (with a 60 s wait for the
    creator's run, a slow tracking server gave a study two parents).
    """
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:  # no such study yet: stand for election
        launcher = os.environ.get("MLFLOW_RUN_ID")  # `mlflow run -e tune` made our run already
        candidate = launcher or client.create_run(experiment_id, run_name=name, tags=resolve_tags()).info.run_id
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                        direction=direction)
        except optuna.exceptions.DuplicatedStudyError:
            if not launcher:
                client.delete_run(candidate)  # another process won; its run is the parent
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        else:
            study.set_user_attr(PARENT_ATTR, candidate)
            client.set_tag(candidate, TAG_ROLE, "study")
            client.set_tag(candidate, TAG_STUDY, name)
            return study, candidate, True
    if study.direction.name.lower() != direction:
        raise RecipeError(f"study {name!r} exists and is {study.direction.name.lower()}d, "
                          f"but this search wants to {direction}; use another --study-name")
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while PARENT_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:  # its creator died between two database writes
            raise RecipeError(f"study {name!r} has no MLflow parent run: its creator stopped while starting it; "
                              "delete the study (optuna delete-study) or use another --study-name")
        time.sleep(0.25)
    return study, study.user_attrs[PARENT_ATTR], False
