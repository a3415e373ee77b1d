"""Studies end to end: `mlflow run -e tune`, several workers on PostgreSQL, a killed worker."""

import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import cli_env, mlflow_run

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState
MLFLOW_STATE = {State.COMPLETE: "COMPLETE", State.PRUNED: "PRUNED", State.FAIL: "FAIL"}


def trial_runs(client, study_name):
    runs = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], f"tags.`ganstop.study` = '{study_name}' and tags.`ganstop.role` = 'trial'")]
    return {int(r.data.tags["ganstop.trial"]): r for r in runs}


def parent_runs(client, study_name):
    return [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], f"tags.`ganstop.study` = '{study_name}' and tags.`ganstop.role` = 'study'")]


def assert_mirrored(client, study):
    """Exactly one run per trial, nested under the one parent, states agreeing."""
    (parent,) = parent_runs(client, study.study_name)
    runs = trial_runs(client, study.study_name)
    assert sorted(runs) == [t.number for t in study.trials]
    for trial in study.trials:
        run = runs[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["ganstop.trial_state"] == MLFLOW_STATE[trial.state], trial.number
        assert run.data.params["trial_number"] == str(trial.number)
        for key, value in trial.params.items():
            assert run.data.params[key] == str(value)
        assert run.info.status == {State.COMPLETE: "FINISHED", State.PRUNED: "FINISHED"}.get(trial.state, run.info.status)
        if trial.state == State.PRUNED:
            assert int(run.data.tags["ganstop.pruned_epoch"]) == max(trial.intermediate_values)
    return parent, runs


def test_mlflow_run_tune_nests_every_trial_and_prunes(search_recipe, tracking, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = cli_env(MLFLOW_TRACKING_URI=tracking)
    # threshold pruner from epoch 2 on: patience 1 stops itself at epoch 2, patience 4 is pruned there
    cmd = [sys.executable, "-m", "ganstop", "tune", "--recipe", str(search_recipe), "--n-trials", "4",
           "--storage", storage, "--study-name", "tiny", "--pruner", "threshold", "--prune-upper", "-1",
           "--prune-warmup-epochs", "2", "--sampler-seed", "3", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best trial" in proc.stdout

    study = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and State.PRUNED in states and State.COMPLETE in states
    client = MlflowClient()
    parent, runs = assert_mirrored(client, study)
    pruned = next(t for t in study.trials if t.state == State.PRUNED)
    assert runs[pruned.number].data.tags["ganstop.pruned_epoch"] == "2"
    assert [m.step for m in client.get_metric_history(runs[pruned.number].info.run_id, "mode_kl")] == [1, 2]
    best = study.best_trial
    assert parent.info.status == "FINISHED"  # the CLI made the parent, so it ends it
    assert parent.data.tags["ganstop.best_trial"] == str(best.number)
    assert parent.data.tags["ganstop.best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert float(parent.data.tags["ganstop.best_value"]) == pytest.approx(best.value)
    assert parent.data.metrics["n_pruned"] == states.count(State.PRUNED)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    for name in ("trials.csv", "best_trial.json", "optimization_history.png", "intermediate_values.png", "pareto.png"):
        assert f"study/{name}" in artifacts


def test_mlflow_run_tune_entry_point(search_recipe, tracking, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = mlflow_run("tune", f"recipe={search_recipe}", "n_trials=2", f"storage={storage}",
                      "study_name=via-mlflow-run", "pruner=none", "seed=1", env=cli_env(MLFLOW_TRACKING_URI=tracking))
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="via-mlflow-run", storage=storage)
    parent, runs = assert_mirrored(MlflowClient(), study)
    assert len(runs) == 2 and parent.info.status == "FINISHED"  # the project run is the study's parent


def test_workers_option_runs_processes_that_share_the_study(search_recipe, tracking, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.run([sys.executable, "-m", "ganstop", "tune", "--recipe", str(search_recipe), "--n-trials", "3",
                           "--workers", "2", "--storage", storage, "--study-name", "local", "--pruner", "none",
                           "--no-progress"], capture_output=True, text=True, env=cli_env(MLFLOW_TRACKING_URI=tracking),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="local", storage=storage)
    assert len(study.trials) == 3
    parent, _ = assert_mirrored(MlflowClient(), study)
    assert parent.info.status == "FINISHED"


def tune_cmd(recipe, storage, n_trials, *extra):
    return [sys.executable, "-m", "ganstop", "tune", "--recipe", str(recipe), "--n-trials", str(n_trials),
            "--storage", storage, "--study-name", "shared", "--pruner", "none", "--no-progress", *extra]


@pytest.fixture
def pg_tracking(postgres_url, tmp_path, monkeypatch):
    """MLflow on PostgreSQL too, so concurrent workers do not fight over a sqlite file."""
    from conftest import use_tracking

    tracking = use_tracking(postgres_url, tmp_path, monkeypatch)
    uri = next(tracking)
    MlflowClient().search_experiments()  # create the schema once, before workers race to
    yield uri
    next(tracking, None)


@pytest.fixture
def study_storage():
    from conftest import fresh_database

    yield from fresh_database()


def test_three_workers_share_one_study_and_one_parent(search_recipe, pg_tracking, study_storage):
    env = cli_env(MLFLOW_TRACKING_URI=pg_tracking)
    procs = [subprocess.Popen(tune_cmd(search_recipe, study_storage, 2, "--seed", str(i)), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[1][-3000:] for o in outputs)
    study = optuna.load_study(study_name="shared", storage=study_storage)
    assert len(study.trials) == 6 and all(t.state == State.COMPLETE for t in study.trials)
    assert_mirrored(MlflowClient(), study)


def test_killed_worker_trial_fails_and_a_new_worker_continues(tmp_path, pg_tracking, study_storage):
    from conftest import tiny_search_recipe

    slow = tmp_path / "slow.yaml"
    slow.write_text(tiny_search_recipe(2000, 1999, short=1998))  # whatever the sampler draws, a trial is long
    env = cli_env(MLFLOW_TRACKING_URI=pg_tracking)
    victim = subprocess.Popen(tune_cmd(slow, study_storage, 1, "--heartbeat", "1", "--grace", "3", "--seed", "2"),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="shared", storage=study_storage)
            running = [t for t in study.get_trials(states=(State.RUNNING,)) if "mlflow_run_id" in t.user_attrs]
        except KeyError:
            pass  # the study is not created yet
    assert running, "the worker never started a trial"
    killed_run = running[0].user_attrs["mlflow_run_id"]
    client = MlflowClient()
    while time.monotonic() < deadline and "d_loss" not in client.get_run(killed_run).data.metrics:
        time.sleep(0.2)  # mid-training: its first epochs are logged, and ~2000 more are to come
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert client.get_run(killed_run).info.status == "RUNNING"

    time.sleep(4)  # past the grace period
    proc = subprocess.run(tune_cmd(slow, study_storage, 1, "--heartbeat", "1", "--grace", "3", "--seed", "5",
                                   "--set", "train.max_epochs=3"),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=study_storage)
    assert [t.state for t in study.trials] == [State.FAIL, State.COMPLETE]
    run = client.get_run(killed_run)
    assert run.info.status in ("FAILED", "KILLED") and run.data.tags["ganstop.trial_state"] == "FAIL"
    assert_mirrored(client, study)
