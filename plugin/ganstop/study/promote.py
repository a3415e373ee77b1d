"""Registry promotion with aliases: a candidate becomes ``@champion`` only if it wins a fair
re-evaluation against the current champion (the test split no selection has seen, one metric
per registered model, the same sample count and latents); otherwise it becomes
``@challenger``. Stages are not used (deprecated in MLflow)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganstop.data.sets import load_data
from ganstop.tracking.evaluator import score
from ganstop.masking import mask
from ganstop.metrics.registry import headline, outputs, resolve
from ganstop.errors import RecipeError
from ganstop.study.storage import DEFAULT_STORAGE
from ganstop.study.tags import RUN_ATTR, TAG_STUDY
from ganstop.stopping.criteria import better
from ganstop.tracking.logger import TAG_MODEL_URI
from ganstop.tracking.store import check_reachable, logged_recipe

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_SOURCE_RUN, TAG_METRIC = "ganstop.source_run", "ganstop.metric"
LOCK_SUFFIX = ".promotion-lock"


@dataclass
class Decision:
    model_name: str
    run_id: str
    metric: str
    mode: str
    candidate_score: float
    champion_score: float | None
    champion_version: str | None
    alias: str  # what the candidate gets: champion or challenger
    version: str | None = None  # None on a dry run that would register a new version
    study: str | None = None

    def describe(self, dry_run: bool) -> str:
        verb = "would become" if dry_run else "is now"
        version = f"version {self.version}" if self.version else "a new version"
        if self.champion_version and self.champion_version == self.version:
            verb, against = "stays", "it is the champion already"
        elif self.champion_version:
            against = f"champion version {self.champion_version} scored {self.champion_score:.5g}"
        else:
            against = "there was no champion"
        return (f"{self.model_name}: {version} from run {self.run_id} {verb} @{self.alias} "
                f"({self.metric} {self.candidate_score:.5g}; {against})")


def _best_trial_run(study_name: str, storage: str | None) -> str:
    try:
        study = optuna.load_study(study_name=study_name, storage=storage or DEFAULT_STORAGE)
    except KeyError:
        raise RecipeError(f"no study named {study_name!r} in {mask(storage or DEFAULT_STORAGE)}") from None
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise RecipeError(f"study {study_name!r} has no completed trial to promote")
    return study.best_trial.user_attrs[RUN_ATTR]


def _candidate(client: MlflowClient, run_id: str):
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise RecipeError(f"no MLflow run {run_id!r} in {mask(mlflow.get_tracking_uri())}") from None
    if TAG_MODEL_URI not in run.data.tags:
        raise RecipeError(f"run {run_id} has no logged generator (pruned, failed or not a ganstop run)")
    return run


def promote(model_name: str, run_id: str | None = None, study_name: str | None = None, storage: str | None = None,
            dry_run: bool = False, n_samples: int | None = None, seed: int = 0, metric: str | None = None) -> Decision:
    if bool(run_id) == bool(study_name):
        raise RecipeError("promote needs exactly one of --run-id or --study-name")
    check_reachable()
    client = MlflowClient()
    run_id = run_id or _best_trial_run(study_name, storage)
    run = _candidate(client, run_id)
    recipe = logged_recipe(run_id)
    metric, mode = _metric(client, model_name, recipe, metric)
    data = load_data(recipe).test_split()  # no stopper, search or best-epoch choice has seen it
    if dry_run:
        return _decide(client, model_name, run, recipe, data, metric, mode, n_samples, seed, study_name)
    with _promotion_lock(client, model_name):  # read the champion, register, move the alias: one at a time
        decision = _decide(client, model_name, run, recipe, data, metric, mode, n_samples, seed, study_name)
        existing = _version_of_run(client, model_name, run_id) or mlflow.register_model(
            run.data.tags[TAG_MODEL_URI], model_name, tags={TAG_SOURCE_RUN: run_id})
        decision.version = existing.version
        client.set_registered_model_tag(model_name, TAG_METRIC, metric)
        tags = {TAG_METRIC: metric, "ganstop.mode": mode, "ganstop.candidate_score": decision.candidate_score,
                "ganstop.champion_score": "none" if decision.champion_score is None else decision.champion_score,
                "ganstop.champion_version": decision.champion_version or "none", TAG_SOURCE_RUN: run_id,
                "ganstop.study": decision.study or "none", "ganstop.decision": decision.alias, "ganstop.split": "test"}
        for key, value in tags.items():
            client.set_model_version_tag(model_name, existing.version, key, str(value))
        client.set_registered_model_alias(model_name, decision.alias, existing.version)
    return decision


def _decide(client: MlflowClient, model_name: str, run, recipe, data, metric: str, mode: str, n_samples: int | None,
            seed: int, study_name: str | None) -> Decision:
    """Candidate and champion re-scored on the test split with the same metric, samples and latents."""
    existing = _version_of_run(client, model_name, run.info.run_id)
    champion = _alias(client, model_name, CHAMPION)
    candidate_score = score(mlflow.pyfunc.load_model(run.data.tags[TAG_MODEL_URI]), recipe, data, n_samples, seed)[metric]
    champion_score = None
    if champion is not None and champion.version != getattr(existing, "version", None):
        champion_model = mlflow.pyfunc.load_model(f"models:/{model_name}/{champion.version}")
        champion_score = score(champion_model, recipe, data, n_samples, seed)[metric]
    wins = champion is None or champion_score is None or better(candidate_score, champion_score, mode)
    return Decision(model_name, run.info.run_id, metric, mode, candidate_score, champion_score,
                    champion.version if champion else None, CHAMPION if wins else CHALLENGER,
                    existing.version if existing else None, study_name or run.data.tags.get(TAG_STUDY))


def _metric(client: MlflowClient, model_name: str, recipe, metric: str | None) -> tuple[str, str]:
    """``--metric``; else the metric this registered model was promoted on before; else the data
    set's headline metric. Never the trial's own monitor, which a search may have varied."""
    if metric is None:
        try:
            metric = client.get_registered_model(model_name).tags.get(TAG_METRIC)
        except MlflowException:
            metric = None  # no such model yet
    if metric is None:
        return headline(recipe)
    directions = outputs(resolve(recipe).names)
    if metric not in directions:
        raise RecipeError(f"--metric {metric!r} is not computed for this model's data; use one of {', '.join(directions)}")
    return metric, directions[metric]


@contextlib.contextmanager
def _promotion_lock(client: MlflowClient, model_name: str, wait: float = 600.0, stale: float = 900.0):
    """A registry-wide mutex: creating a registered model is an atomic insert in every MLflow
    store, so the process that creates ``<name>.promotion-lock`` holds it until it deletes it.
    Without it, two promotions could both see no champion, or register the same run twice."""
    lock, deadline = f"{model_name}{LOCK_SUFFIX}", time.monotonic() + wait
    while True:
        try:
            client.create_registered_model(lock, description="held by a running `ganstop promote`")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        with contextlib.suppress(MlflowException):  # it may be gone already
            if time.time() - client.get_registered_model(lock).creation_timestamp / 1000 > stale:
                client.delete_registered_model(lock)  # its holder died mid-promotion
                continue
        if time.monotonic() > deadline:
            raise RecipeError(f"another promotion of {model_name} has held {lock} for over {wait:.0f} s")
        time.sleep(0.5)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None  # no such model yet, or no such alias


def _version_of_run(client: MlflowClient, name: str, run_id: str):
    """The version already registered from this run: promoting twice adds none."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(TAG_SOURCE_RUN) == run_id), None)
