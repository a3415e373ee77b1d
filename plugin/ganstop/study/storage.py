"""The study's storage: SQLite by default, PostgreSQL for many workers; heartbeats mark a dead
worker's trial and its MLflow run."""

from __future__ import annotations

import time

import optuna
import sqlalchemy
from mlflow.tracking import MlflowClient

from ganstop.tracking import sqlite_schema
from ganstop.masking import mask
from ganstop.errors import RecipeError, first_line

from ganstop.study.tags import RUN_ATTR, TAG_ERROR, TAG_STATE

DEFAULT_STORAGE = "sqlite:///optuna.db"

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
