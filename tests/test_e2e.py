"""`mlflow run . --env-manager local` end to end, read back through MlflowClient."""

import subprocess
import time

import mlflow
import numpy as np
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import cli_env, mlflow_run

pytestmark = pytest.mark.slow
TINY = "stopping.warmup=1 metrics.classifier_epochs=3 model.width=16 metrics.grid_size=16 metrics.every=1"


def run_main(tracking: str, *params: str) -> subprocess.CompletedProcess:
    return mlflow_run("main", *params, env=cli_env(MLFLOW_TRACKING_URI=tracking), experiment="e2e")


def test_mlflow_run_main_logs_everything(tracking):
    proc = run_main(tracking, "max_epochs=3", "patience=4", "min_delta=0.5", f"overrides={TINY}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    run_id, data = run.info.run_id, run.data
    assert run.info.status == "FINISHED"

    # params: the whole resolved recipe, flattened, plus the autolog-style names
    for key in ("dataset.name", "model.d_norm", "train.max_epochs", "decay.g_schedule", "ema.decay",
                "stopping.warmup", "metrics.every"):
        assert key in data.params
    assert data.params["train.max_epochs"] == "3"
    assert (data.params["monitor"], data.params["mode"]) == ("fid", "min")
    assert (data.params["patience"], data.params["min_delta"]) == ("4", "0.5")

    # per-epoch metrics, one point per epoch
    for key in ("d_loss", "g_loss", "lr_g", "lr_d", "fid", "fid_se", "kid", "class_coverage", "class_kl",
                "epoch_seconds", "samples_per_second"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key
    fid = {m.step: m.value for m in client.get_metric_history(run_id, "fid")}
    best_epoch = min(fid, key=fid.get)
    assert data.metrics["restored_epoch"] == best_epoch
    assert data.metrics["best_score"] == pytest.approx(fid[best_epoch])
    assert data.metrics["stopped_epoch"] == 3
    assert 0.5 < data.metrics["classifier_accuracy"] <= 1
    assert data.tags["ganstop.stop_reason"] == "max_epochs"
    assert {"test_fid", "test_kid", "test_class_coverage"} <= set(data.metrics)  # the test split, scored once
    assert len(client.get_metric_history(run_id, "test_fid")) == 1

    # artifacts: resolved recipe, a grid per validation, curves
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"recipe.yaml", "curves.png", "samples"} <= top
    grids = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert grids == ["samples/epoch_0001.png", "samples/epoch_0002.png", "samples/epoch_0003.png"]
    recipe_text = mlflow.artifacts.load_text(f"runs:/{run_id}/recipe.yaml")
    assert "patience: 4" in recipe_text

    # the best-epoch generator as a pyfunc model with a tensor signature
    model = mlflow.pyfunc.load_model(data.tags["ganstop.model_uri"])
    inputs = model.metadata.get_input_schema().inputs[0]
    assert inputs.shape == (-1, 32) and inputs.type == np.dtype("float32")
    out = model.predict(np.random.default_rng(0).standard_normal((6, 32)).astype(np.float32))
    assert out.shape == (6, 1, 8, 8) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_mlflow_run_bad_parameter_leaves_no_run(tracking):
    proc = run_main(tracking, "patience=-1")
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("ganstop:")]
    assert ours == ["ganstop: error: stopping.patience must be >= 0, not -1"]
    assert "Traceback" not in proc.stderr
    client = MlflowClient()
    experiment = client.get_experiment_by_name("e2e").experiment_id
    deadline = time.monotonic() + 30
    while client.search_runs([experiment]) and time.monotonic() < deadline:
        time.sleep(0.2)  # the rejected run is deleted once `mlflow run` has marked it failed
    assert client.search_runs([experiment]) == []
    (deleted,) = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert deleted.info.status == "FAILED"
