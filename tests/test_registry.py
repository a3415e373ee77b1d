"""Promotion, generation and the MLflow plugin entry points against a real `mlflow server`."""

import re
import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, cli_env, invoke, mlflow_server

pytestmark = pytest.mark.slow
NAME = "digits-gan"
TINY = "stopping.warmup=0 metrics.classifier_epochs=3 metrics.every=1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from mlflow_server(tmp_path_factory.mktemp("mlflow-server"))


@pytest.fixture
def remote(server, tmp_path, monkeypatch):
    from conftest import use_tracking

    yield from use_tracking(server, tmp_path, monkeypatch)


def train(epochs: int, capsys) -> str:
    code, out, err = invoke(["train", "--no-progress", "--max-epochs", str(epochs), "--set", TINY], capsys)
    assert code == 0, err
    return re.search(r"^run ([0-9a-f]{32}): stopped", out, re.M).group(1)


def aliases(client) -> dict[str, str]:
    return dict(client.get_registered_model(NAME).aliases)


def test_promotion_generation_and_plugins(remote, tmp_path, capsys):
    client = MlflowClient()
    first, worse, better = (train(e, capsys) for e in (3, 1, 6))

    code, out, err = invoke(["promote", "--model-name", NAME, "--run-id", first], capsys)
    assert code == 0 and "@champion" in out and "there was no champion" in out, err
    assert aliases(client) == {"champion": "1"}

    code, out, _ = invoke(["promote", "--model-name", NAME, "--run-id", worse], capsys)
    assert code == 0 and "@challenger" in out
    assert aliases(client) == {"champion": "1", "challenger": "2"}
    challenger = client.get_model_version(NAME, "2")
    assert challenger.tags["ganstop.source_run"] == worse and challenger.tags["ganstop.metric"] == "fid"
    assert float(challenger.tags["ganstop.candidate_score"]) > float(challenger.tags["ganstop.champion_score"])

    code, _, _ = invoke(["promote", "--model-name", NAME, "--run-id", worse], capsys)
    assert code == 0 and len(client.search_model_versions(f"name = '{NAME}'")) == 2  # no second version

    code, out, _ = invoke(["promote", "--model-name", NAME, "--run-id", better, "--dry-run"], capsys)
    assert code == 0 and "would become @champion" in out
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2 and aliases(client)["champion"] == "1"

    code, out, _ = invoke(["promote", "--model-name", NAME, "--run-id", better], capsys)
    assert code == 0 and "@champion" in out
    assert aliases(client) == {"champion": "3", "challenger": "2"}
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert float(champion.tags["ganstop.candidate_score"]) < float(champion.tags["ganstop.champion_score"])
    assert champion.tags["ganstop.champion_version"] == "1"

    # generate from the registry, and the pyfunc predict path `mlflow models serve` uses
    png, npy = tmp_path / "grid.png", tmp_path / "grid.npy"
    code, _, err = invoke(["generate", "--model-uri", f"models:/{NAME}@champion", "--n", "16", "--out", str(png),
                        "--out-npy", str(npy)], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and np.load(npy).shape == (16, 1, 8, 8)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(np.zeros((3, 32), np.float32))
    assert served.shape == (3, 1, 8, 8)

    # the MLproject entry points for the same two commands
    env = cli_env(MLFLOW_TRACKING_URI=remote)
    project = [sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local"]
    dry = subprocess.run(project + ["-e", "promote", "-P", f"model_name={NAME}", "-P", f"run_id={first}",
                                    "-P", "dry_run=true"], capture_output=True, text=True, env=env, timeout=600)
    assert dry.returncode == 0 and "would become @challenger" in dry.stdout, dry.stderr[-2000:]
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 3
    grid = tmp_path / "project.png"
    gen = subprocess.run(project + ["-e", "generate", "-P", f"model_uri=models:/{NAME}@champion", "-P", "n=9",
                                    "-P", f"out={grid}"], capture_output=True, text=True, env=env, timeout=600)
    assert gen.returncode == 0 and grid.read_bytes()[:4] == b"\x89PNG", gen.stderr[-2000:]

    # the `gan` scorer, found by MLflow through the package's entry point
    from ganstop import recipe as rc
    from ganstop.data.sets import load_data

    recipe = rc.load(None, [("metrics.classifier_epochs", 3), ("stopping.warmup", 0)])
    data = load_data(recipe)
    reference = ((data.test + 1) / 2).reshape(len(data.test), -1).numpy()  # what promotion scored on
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(f"models:/{NAME}@champion", reference, model_type="gan",
                                        evaluators=["gan"], evaluator_config={"gan": {"recipe": recipe.to_dict()}})
    assert result.metrics["fid"] == pytest.approx(float(champion.tags["ganstop.candidate_score"]), rel=1e-3)
    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics["fid"] == pytest.approx(result.metrics["fid"])
    # ... and the run-context provider, applied by MLflow to a run ganstop did not start itself
    assert logged.data.tags["ganstop.version"] and logged.data.tags["ganstop.torch_version"]
    from ganstop.tracking.context import gpu_name

    assert logged.data.tags["ganstop.gpu"] == gpu_name()


def test_promotion_errors_register_nothing(remote, tmp_path, capsys):
    client = MlflowClient()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="empty", storage=storage)
    bare = client.create_run(client.get_experiment_by_name("Default").experiment_id).info.run_id
    cases = [
        (["promote", "--model-name", "x", "--study-name", "empty", "--storage", storage], "no completed trial"),
        (["promote", "--model-name", "x", "--study-name", "nope", "--storage", storage], "no study named 'nope'"),
        (["promote", "--model-name", "x", "--run-id", bare], "has no logged generator"),
        (["promote", "--model-name", "x", "--run-id", "0" * 32], "no MLflow run"),
        (["promote", "--model-name", "x"], "exactly one of --run-id or --study-name"),
        (["generate", "--model-uri", "models:/no-such-model@champion"], "cannot load models:/no-such-model@champion"),
        (["generate", "--model-uri", "models:/x@nobody"], "cannot load"),
    ]
    for args, message in cases:
        code, _, err = invoke(args, capsys)
        assert code == 2, args
        assert err.strip().count("\n") == 0 and message in err and "Traceback" not in err, (args, err)
    assert client.search_registered_models("name = 'x'") == []


def test_the_run_context_provider_never_initialises_cuda(monkeypatch):
    """It runs in every MLflow run on the machine; initialising CUDA there breaks later forks."""
    import torch

    from ganstop.tracking.context import GanstopRunContext

    def no_init():
        raise AssertionError("the run-context provider initialised CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", no_init)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert GanstopRunContext().tags()["ganstop.gpu"] == "2 CUDA device(s), not initialised"


def test_concurrent_promotions_register_once_and_the_better_model_wins(remote, capsys):
    """Two `promote` commands at once, three times over the same two runs: without the lock both
    saw no champion, and both registered the same run."""
    client = MlflowClient()
    worse, better = (train(e, capsys) for e in (1, 5))
    name = "raced"
    env = cli_env(MLFLOW_TRACKING_URI=remote)
    for runs in ([worse, better], [better, worse], [better, better]):
        procs = [subprocess.Popen([sys.executable, "-m", "ganstop", "promote", "--model-name", name, "--run-id", run],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for run in runs]
        errors = [p.communicate(timeout=600)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.tags["ganstop.source_run"] for v in versions) == sorted([worse, better])  # once per run
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags["ganstop.source_run"] == better and champion.tags["ganstop.split"] == "test"
    assert client.get_registered_model(name).tags["ganstop.metric"] == "fid"
    assert not [m for m in client.search_registered_models() if m.name.endswith(".promotion-lock")]
