"""The CLI on bad input (one line, exit 2, nothing tracked) and on a real tiny run."""

import subprocess
import sys

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, all_runs, cli_env, invoke

RING = str(ROOT / "recipes" / "ring8-mlp.yaml")
TINY_RING = ["--recipe", RING, "--max-epochs", "3", "--set",
             "dataset.n_train=2000 dataset.n_val=500 train.batch_size=200 model.width=32 stopping.warmup=1 "
             "metrics.every=1 train.checkpoint_seconds=0 metrics.n_samples=0"]


BAD = [  # (command line, what the one line must say); {x} are files made by the test
    (["train", "--patience", "-1"], "stopping.patience must be >= 0"),
    (["train", "--patience", "abc"], "'abc' is not a valid integer"),
    (["train", "--max-epochs", "0"], "train.max_epochs must be > 0"),
    (["train", "--min-delta", "-0.5"], "stopping.min_delta must be >= 0"),
    (["train", "--recipe", "missing.yaml"], "does not exist"),
    (["train", "--recipe", "{broken}"], "not valid YAML"),
    (["train", "--recipe", "{empty}"], "is empty"),
    (["train", "--recipe", "{typo}"], "did you mean 'patience'"),
    (["train", "--set", "stopping.monitor=fdi"], "did you mean 'fid'"),
    (["train", "--set", "patience"], "section.key=value"),
    (["train", "--set", "stopping.warmup=500"], "below train.max_epochs"),
    (["train", "--set", "metrics.names=[fid,bogus]"], "unknown metric 'bogus'"),
    (["train", "--set", "train.lr_g=-0.1"], "train.lr_g must be > 0"),
    (["train", "--set", "model.d_norm=layer"], "one of batch, none, spectral"),
    (["train", "--device", "cuda:99"], "GPU"),
    (["train", "--device", "tpu"], "auto, cpu, cuda"),
    (["train", "--patiense", "3"], "Did you mean '--patience'"),
    (["train", "--set", "dataset.name=mnist", "--set", "dataset.root=/nonexistent"], "mnist"),
    (["train", "--resume", "0123456789abcdef0123456789abcdef"], "no checkpoint of run"),
    (["train", "--set", "metrics.names=[fid,inception_fid] metrics.inception_weights=/nope.pth"], "is not a file"),
    (["tune", "--pruner", "bogus"], "'bogus' is not one of"),
    (["tune", "--n-trials", "0"], "0 is not in the range x>=1"),
    (["tune", "--recipe", "{nosearch}"], "no search.space"),
    (["tune", "--recipe", "mnist-dcgan", "--set", "dataset.root=/nonexistent"], "mnist"),
    (["tune", "--pruner", "threshold", "--storage", "sqlite:///{tmp}/optuna.db"], "--prune-lower"),
    (["tune", "--storage", "optuna.db"], "must be a database URL"),
    (["tune", "--recipe", "{badspace}", "--storage", "sqlite:///{tmp}/optuna.db"], "search.space.stopping.warmup"),
    (["promote", "--model-name", "m"], "exactly one of --run-id or --study-name"),
    (["promote", "--model-name", "m", "--run-id", "r", "--study-name", "s"], "exactly one of"),
    (["generate", "--model-uri", "models:/m@champion", "--n", "0"], "0 is not in the range x>=1"),
    (["generate"], "Missing option '--model-uri'"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_nothing_left(args, message, tmp_path, tracking, capsys):
    files = {"broken": "train: [1, 2", "empty": "", "typo": "stopping:\n  patients: 3\n",
             "badspace": "search:\n  space:\n    stopping.warmup: {type: int, low: 1, high: 900}\n",
             "nosearch": "dataset: {name: digits}\n"}
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    names = {n: str(tmp_path / f"{n}.yaml") for n in files} | {"tmp": str(tmp_path)}
    args = [a.format(**names) for a in args]
    code, out, err = invoke(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganstop: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "optuna.db").exists()  # no study
    if (tmp_path / "mlflow.db").exists():  # probing the store may create it; nothing goes in it
        assert all_runs() == [] and MlflowClient().search_registered_models() == []


def test_train_logs_a_complete_run_for_2d_data(tracking, capsys):
    secret = "metrics.inception_weights=https://me:hunter2@example.com/w.pt"  # unused by 2D, but logged
    code, out, err = invoke(["train", "--no-progress", "--experiment-name", "ring", *TINY_RING, "--set", secret],
                            capsys)
    assert code == 0, err
    (run,) = all_runs()
    assert run.info.run_id in out and "stopped at epoch" in out
    client = MlflowClient()
    assert client.get_experiment(run.info.experiment_id).name == "ring"
    assert run.data.params["monitor"] == "mode_error" and run.data.params["mode"] == "min"
    assert {"test_mode_error", "test_modes", "test_hq_ratio", "test_swd"} <= set(run.data.metrics)
    assert run.data.params["dataset.n_train"] == "2000"
    samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert samples == [f"samples/epoch_000{e}.png" for e in (1, 2, 3)]
    model = mlflow.pyfunc.load_model(run.data.tags["ganstop.model_uri"])
    assert model.predict(np.zeros((7, 16), np.float32)).shape == (7, 2)
    assert run.data.params["metrics.inception_weights"] == "https://me:***@example.com/w.pt"
    assert "hunter2" not in mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/recipe.yaml")


def test_console_script_and_module_entry_points(tracking):
    env = cli_env()
    for cmd in (["ganstop", "--help"], [sys.executable, "-m", "ganstop", "train", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and "Usage:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "ganstop", "train", "--patience", "x"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
