"""Optuna studies over the recipe's ``search:`` section, one nested MLflow run per trial.

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
from typing import Any

import mlflow
import optuna
import sqlalchemy
from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from ganstop import recipe as rc
from ganstop import distributed, runner, sqlite_schema
from ganstop.masking import mask
from ganstop.errors import RecipeError, first_line
from ganstop.recipe import Recipe
from ganstop.stopping import StopReason, better
from ganstop.callbacks import Callback

PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"
TAG_STUDY, TAG_TRIAL, TAG_STATE, TAG_ROLE = "ganstop.study", "ganstop.trial", "ganstop.trial_state", "ganstop.role"
TAG_PRUNED_EPOCH, TAG_ERROR, TAG_PARENT = "ganstop.pruned_epoch", "ganstop.error", "mlflow.parentRunId"
DEFAULT_STORAGE = "sqlite:///optuna.db"
PARENT_WAIT_SECONDS = 60.0
DISTRIBUTION_KEYS = {"int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"},
                     "categorical": {"choices"}}


@dataclass
class SearchSpace:
    """``search: {compute_weight: w, space: {section.key: distribution}}`` from a recipe."""

    space: dict[str, dict[str, Any]]
    compute_weight: float = 0.0  # metric units charged for spending the whole epoch budget

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "SearchSpace":
        section = dict(recipe.search)
        if not section.get("space"):
            raise RecipeError("the recipe has no search.space to search; add distributions under search.space")
        unknown = set(section) - {"space", "compute_weight"}
        if unknown:
            raise RecipeError(f"unknown search key {sorted(unknown)[0]!r}; search holds space and compute_weight")
        weight = section.get("compute_weight", 0.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise RecipeError(f"search.compute_weight must be a number >= 0, not {weight!r}")
        space = section["space"]
        if not isinstance(space, dict):
            raise RecipeError("search.space must map section.key to a distribution")
        for key, dist in space.items():
            _check_distribution(recipe, key, dist)
        return cls(space, float(weight))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        values = {}
        for key, dist in self.space.items():
            kind = dist["type"]
            if kind == "categorical":
                values[key] = trial.suggest_categorical(key, dist["choices"])
            elif kind == "int":
                values[key] = trial.suggest_int(key, dist["low"], dist["high"], step=dist.get("step", 1),
                                                log=dist.get("log", False))
            else:
                values[key] = trial.suggest_float(key, dist["low"], dist["high"], step=dist.get("step"),
                                                  log=dist.get("log", False))
        return values


def _check_distribution(recipe: Recipe, key: str, dist: Any) -> None:
    where = f"search.space.{key}"
    if not isinstance(dist, dict) or dist.get("type") not in DISTRIBUTION_KEYS:
        raise RecipeError(f"{where} must be a mapping with type int, float or categorical")
    extra = set(dist) - DISTRIBUTION_KEYS[dist["type"]] - {"type"}
    if extra:
        raise RecipeError(f"{where} has unknown option {sorted(extra)[0]!r} for a {dist['type']} distribution")
    if dist["type"] == "categorical":
        if not isinstance(dist.get("choices"), list) or not dist["choices"]:
            raise RecipeError(f"{where}.choices must be a non-empty list")
        samples = dist["choices"]
    else:
        low, high = dist.get("low"), dist.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise RecipeError(f"{where} needs numbers low <= high")
        if dist.get("log") and low <= 0:
            raise RecipeError(f"{where} is log-scaled, so low must be > 0")
        samples = [low, high]
    for value in samples:  # each bound must make a valid recipe: catches warmup >= max_epochs early
        try:
            rc.load(None, [(key, value)], base=recipe)
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None


def make_sampler(seed: int | None) -> optuna.samplers.TPESampler:
    """TPE with its own seed, not the training seed: workers that share a study must not draw
    the same trials. ``constant_liar`` makes running trials count as bad results so parallel
    workers spread out instead of all sampling next to the current best."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(name: str, *, startup_trials: int = 3, warmup_steps: int = 0, percentile: float = 25.0,
                patience: int = 2, lower: float | None = None, upper: float | None = None,
                min_resource: int = 1, reduction_factor: int = 3, max_resource: int = 100) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(percentile, n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                              reduction_factor=reduction_factor)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)
    if name == "patient":
        return optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps), patience=patience)
    if name == "threshold":
        if lower is None and upper is None:
            raise RecipeError("--pruner threshold needs --prune-lower and/or --prune-upper")
        return optuna.pruners.ThresholdPruner(lower=lower, upper=upper, n_warmup_steps=warmup_steps)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise RecipeError(f"unknown pruner {name!r}")


def mark_stale_run(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Heartbeat callback: a worker died mid-trial; its MLflow run must not stay RUNNING."""
    run_id = trial.user_attrs.get(RUN_ATTR)
    if run_id:
        client = MlflowClient()
        client.set_tag(run_id, TAG_STATE, "FAIL")
        client.set_tag(run_id, TAG_ERROR, "worker stopped sending heartbeats (killed?)")
        client.set_terminated(run_id, "KILLED")


# PostgreSQL's answers to workers creating a fresh database's tables at once: unique violation,
# duplicate table, duplicate object, deadlock (the first two seen here with 6 workers on a busy machine)
SCHEMA_RACES = {"23505", "42P07", "42710", "40P01"}


def _schema_race(exc: sqlalchemy.exc.DBAPIError) -> bool:
    """Lost the race to create the schema: the winner's tables will be there on the next try."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or code in SCHEMA_RACES


def make_storage(url: str | None, heartbeat_interval: int, grace_period: int, retries: int) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats (sqlite file by default, PostgreSQL for many machines)."""
    url = url or DEFAULT_STORAGE
    if "://" not in url:
        raise RecipeError(f"--storage must be a database URL such as {DEFAULT_STORAGE}, not {mask(url)!r}")
    retry = optuna.storages.RetryFailedTrialCallback(max_retry=retries) if retries else None

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mark_stale_run(study, trial)
        if retry:
            retry(study, trial)

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 5}
    try:
        for attempt in range(5):
            try:
                with sqlite_schema.creating(url):
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                      heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                                      heartbeat_stale_trial_callback=on_stale)
            except sqlalchemy.exc.DBAPIError as exc:
                if attempt == 4 or not _schema_race(exc):
                    raise
                time.sleep(0.5 + attempt)
    except ImportError as exc:
        raise RecipeError(f"storage {mask(url)} needs a driver: {exc.name or exc} (pip install 'mlflow-ganstop[postgres]')") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; the user needs one line
        raise RecipeError(f"cannot open storage {mask(url)}: {mask(first_line(exc))}") from None


class OptunaPruning(Callback):
    """Reports, at each validation, what the objective would be if the trial ended there (the
    best metric so far plus the compute charge so far), so intermediate and final values are on
    one scale; raises TrialPruned when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str, objective: "Objective"):
        self.trial, self.metric, self.objective, self.pruned_epoch = trial, metric, objective, None
        self._stopping, self._best = False, None

    def on_validation_end(self, epoch: int, metrics: dict[str, float], samples, check) -> None:
        self._stopping = check.stop is not None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        # After the MLflow logger's on_epoch_end (callback order), so pruned epochs are logged.
        value = logs.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        if self._best is None or better(value, self._best, self.objective.mode):
            self._best = value
        self.trial.report(self.objective.value(self._best, epoch), epoch)
        if not self._stopping and self.trial.should_prune():  # a trial that ended itself completes
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
        charge = self.space.compute_weight * epochs / self.base.train.max_epochs
        return best + charge if self.mode == "min" else best - charge

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
