"""The MLflow tracking store: reached before any training, opened once input is checked, read back
for a run's recipe."""

from __future__ import annotations


import mlflow
import yaml
from mlflow.tracking import MlflowClient

from ganstop.tracking import sqlite_schema
from ganstop.masking import mask
from ganstop.errors import RecipeError, first_line
from ganstop.recipe import Recipe, from_dict

def check_reachable(timeout: float = 5.0) -> None:
    """Fail in seconds, before any training, when the tracking store cannot be reached.

    A server is asked through MLflow's own HTTP layer, so its credentials (token, basic auth,
    auth plugins) and TLS settings apply exactly as they will for the run; only this probe is
    cut to one try that must connect within ``timeout`` seconds, while the run keeps MLflow's
    retry policy. A server that accepted the connection is reachable: its answer gets MLflow's
    own read timeout, since a busy server (two promotions scoring beside it on a small machine)
    can take longer than a few seconds to answer.
    """
    uri = mlflow.get_tracking_uri()
    try:
        if uri.startswith(("http://", "https://")):
            from mlflow.tracking._tracking_service.utils import get_default_host_creds
            from mlflow.utils.rest_utils import http_request

            from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

            reply = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "POST",
                                 max_retries=0, timeout=(timeout, MLFLOW_HTTP_REQUEST_TIMEOUT.get()),
                                 raise_on_status=False, json={"max_results": 1})
            if reply.status_code in (401, 403):
                raise RecipeError(f"the MLflow tracking server {mask(uri)} refused the credentials (HTTP "
                                  f"{reply.status_code}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
                                  "or MLFLOW_TRACKING_TOKEN")
            if reply.status_code == 404:
                raise RecipeError(f"{mask(uri)} answered HTTP 404 to the MLflow API: it is not an MLflow tracking "
                                  "server (check the host, port and path of MLFLOW_TRACKING_URI)")
            if reply.status_code >= 500:
                raise RecipeError(f"the MLflow tracking server {mask(uri)} failed the request (HTTP {reply.status_code})")
        elif uri.startswith(("postgresql", "mysql", "mssql")):
            import sqlalchemy

            args = {"connect_timeout": int(timeout)} if uri.startswith(("postgresql", "mysql")) else {}
            sqlalchemy.create_engine(uri, connect_args=args).connect().close()
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - requests/SQLAlchemy raise many kinds; one line is what helps
        reason = first_line(exc)
        if any(s in reason for s in ("Connection refused", "Max retries", "timed out", "ConnectTimeout")):
            reason = "connection refused or timed out"
        raise RecipeError(f"cannot reach the MLflow tracking store {mask(uri)}: {mask(reason)[:200]}; "
                          "start it or set MLFLOW_TRACKING_URI") from None


def open_store() -> None:
    """Open the tracking store before the first write, once every input is checked (so bad input
    creates no database). An embedded SQLite store gets its schema one process at a time: two
    commands started together on a fresh file must not both migrate it."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite"):
        with sqlite_schema.creating(uri):
            MlflowClient().search_experiments(max_results=1)


def logged_recipe(run_id: str) -> Recipe:
    """The resolved recipe a run logged (resume and promotion re-use its exact settings)."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/recipe.yaml")
    return from_dict(yaml.safe_load(text))
