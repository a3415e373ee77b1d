"""Shared fixtures: no network, a per-session cache (the digit classifier trains once), tiny recipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run wherever a CUDA GPU is, and skip themselves elsewhere (CI has none)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):  # the mark, not the keyword: a checkout in a folder named gpu
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def ganstop_cache(tmp_path_factory) -> Path:
    """One cache for the whole session, shared with subprocesses through the environment."""
    cache = Path(os.environ.get("GANSTOP_TEST_CACHE") or tmp_path_factory.mktemp("ganstop-cache"))
    os.environ["GANSTOP_CACHE"] = str(cache)
    return cache


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    """A fresh sqlite tracking store with a local artifact root, for this test only."""
    yield from use_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, monkeypatch)


def use_tracking(uri: str, workdir: Path, monkeypatch):
    """Point this process and its children at ``uri``; undo what MLflow's fluent API leaves set."""
    import mlflow
    from mlflow.tracking import fluent

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(workdir)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # mlflow.set_experiment() exports it
    fluent._active_experiment_id = None


def tiny(name: str = "ring8", **extra) -> list[tuple[str, object]]:
    """Overrides that make a recipe train in about a second on 2 CPU cores."""
    base = {
        "ring8": {"dataset.n_train": 2000, "dataset.n_val": 500, "train.batch_size": 200, "train.max_epochs": 4,
                  "model.width": 32, "stopping.warmup": 1, "stopping.patience": 2,
                  "stopping.monitor": "swd",  # a few epochs land no sample within 3 std: mode_error stays 1
                  "metrics.n_samples": 0},  # as many as the 500 held-out points, not the recipe's 10,000
        "digits": {"train.max_epochs": 2, "stopping.warmup": 1, "metrics.classifier_epochs": 3,
                   "model.width": 16},
    }[name]
    # a check every epoch and a checkpoint after each: tests count on both, whatever the machine's speed
    fixed = {"metrics.every": 1, "train.checkpoint_seconds": 0}
    return list({**fixed, **base, **extra}.items())


def cli_env(**extra) -> dict[str, str]:
    """Environment for a subprocess CLI: this interpreter's bin first (``python``, ``ganstop``)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def tiny_search_recipe(epochs: int, long: int, short: int = 1) -> str:
    """A search over patience ``short`` (stops at epoch short + 1) or ``long``."""
    return TINY_SEARCH_RECIPE % {"epochs": epochs, "long": long, "short": short}


TINY_SEARCH_RECIPE = """
dataset: {name: ring8, n_train: 2000, n_val: 500}
model: {family: mlp, z_dim: 8, width: 32, depth: 2, d_norm: none}
train: {max_epochs: %(epochs)d, batch_size: 200, checkpoint_seconds: 0}
stopping: {monitor: mode_kl, patience: 3, min_delta: 1.0, warmup: 0}
metrics: {every: 1}
search:
  compute_weight: 0.1
  space:
    stopping.patience: {type: categorical, choices: [%(short)d, %(long)d]}
    decay.g_final_lr: {type: float, low: 0.1, high: 1.0, log: true}
    ema.decay: {type: categorical, choices: [0.9, 0.99]}
"""


@pytest.fixture
def search_recipe(tmp_path) -> Path:
    """Patience 1 stops at epoch 2 (min_delta 1.0 is never met); the long one runs on."""
    path = tmp_path / "tiny-search.yaml"
    path.write_text(tiny_search_recipe(6, 4))
    return path


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    yield from fresh_database()


def fresh_database():
    import uuid

    import psycopg

    name = f"ganstop_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=5,
                                autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required (see .ci/run): {exc}")
    admin.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def mlflow_server(root: Path, *extra: str, env: dict[str, str] | None = None):
    """A real `mlflow server` on a free local port, yielded as its URL once /health answers."""
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", *extra, "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                            env=env or cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"mlflow server {' '.join(extra)} did not come up")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def train_then_kill(settings: list[str], env: dict[str, str], run_name: str = "victim") -> str | None:
    """Start `ganstop train`, SIGKILL it once it has written two checkpoints (last.pt.prev
    exists: training is under way, a kill lands mid-run), and return its run id."""
    import signal
    import subprocess
    import time

    from mlflow.tracking import MlflowClient

    victim = subprocess.Popen([sys.executable, "-m", "ganstop", "train", *settings, "--run-name", run_name], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, deadline, run_id = MlflowClient(), time.monotonic() + 300, None
    while time.monotonic() < deadline and victim.poll() is None:
        if run_id is None:
            runs = client.search_runs(["0"], f"attributes.run_name = '{run_name}'")
            run_id = runs[0].info.run_id if runs else None
        if run_id and (Path(os.environ["GANSTOP_CACHE"]) / "checkpoints" / run_id / "last.pt.prev").exists():
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    return run_id


def report_checks(pruning, metric: str, values) -> None:
    """Each of ``values`` as one epoch's check, through a trial's ``OptunaPruning`` callback as the
    training loop calls it; raises ``optuna.TrialPruned`` where the study's pruner prunes."""
    from ganstop.stopping.stopper import Check

    for epoch, value in enumerate(values, start=1):
        pruning.on_validation_end(epoch, {metric: value}, None, Check(False, False, None))
        pruning.on_epoch_end(epoch, {metric: value})


def invoke(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    from ganstop.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def mlflow_run(entry: str, *params: str, env: dict[str, str], experiment: str | None = None) -> subprocess.CompletedProcess:
    """``mlflow run`` of this project's entry point with this interpreter (``--env-manager local``)."""
    args = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "-e", entry]
    args += ["--experiment-name", experiment] if experiment else []
    for p in params:
        args += ["-P", p]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)


def all_runs() -> list:
    """Every active run in every experiment of the current tracking store."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return [r for e in client.search_experiments(view_type=ViewType.ALL)
            for r in client.search_runs([e.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)]
