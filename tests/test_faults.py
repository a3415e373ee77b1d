"""Nothing lost under faults: kills, torn checkpoints, NaNs, failing trials, dead servers, secrets."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from conftest import ROOT, cli_env, invoke, mlflow_server, tiny, tiny_search_recipe, train_then_kill
from ganstop import recipe as rc
from ganstop.tracking import runner
from ganstop.data.sets import load_data
from ganstop.metrics.scorer import Scorer
from ganstop.training.callbacks import Callback
from ganstop.training.loop import Trainer

RING = ROOT / "recipes" / "ring8-mlp.yaml"
State = optuna.trial.TrialState


def ring_trainer(folder, **overrides):
    recipe = rc.load(RING, tiny("ring8", **{"train.max_epochs": 5, "stopping.patience": 10, **overrides}))
    data = load_data(recipe)
    return Trainer(recipe, data, Scorer(recipe, data, torch.device("cpu")), folder, progress=False)


def comparable(history):
    timing = ("epoch_seconds", "samples_per_second", "validation_seconds")
    return [{k: v for k, v in row.items() if k not in timing} for row in history]


class KilledAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_torn_checkpoint_is_never_loaded_the_previous_one_is(tmp_path):
    straight = ring_trainer(tmp_path / "a").fit()
    torn = ring_trainer(tmp_path / "b")  # the same budget, so the same LR schedule
    torn.callbacks.append(KilledAfter(3))
    with pytest.raises(KeyboardInterrupt):
        torn.fit()
    last = torn.checkpointing.last_path
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # killed while writing
    resumed = ring_trainer(tmp_path / "b")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        assert resumed.resume()
    assert resumed.epoch == 1  # last.pt.prev (the kill came before epoch 3's checkpoint)
    assert comparable(resumed.fit().history) == comparable(straight.history)


class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ganstop-pwned",))


def test_a_checkpoint_with_code_in_it_is_refused(tmp_path):
    Path("/tmp/ganstop-pwned").unlink(missing_ok=True)
    trainer = ring_trainer(tmp_path)
    trainer.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 3, "payload": Boom()}, trainer.checkpointing.last_path)
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        assert not trainer.resume()
    assert not Path("/tmp/ganstop-pwned").exists() and trainer.epoch == 0


def test_a_recipe_that_diverges_stops_non_finite(tracking, capsys):
    code, out, _ = invoke(["train", "--no-progress", "--recipe", str(RING), "--max-epochs", "4", "--set",
                             "dataset.n_train=2000 dataset.n_val=500 train.batch_size=200 model.width=32 "
                             "stopping.warmup=0 decay.d_penalty=l2 decay.d_penalty_lambda=1e38"], capsys)
    assert code == 0 and "non_finite_loss" in out
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FINISHED" and run.data.tags["ganstop.stop_reason"] == "non_finite_loss"
    assert run.data.metrics["stopped_epoch"] == 1 and "ganstop.model_uri" not in run.data.tags


@pytest.fixture
def diverging_recipe(tmp_path):
    path = tmp_path / "diverging.yaml"
    text = tiny_search_recipe(3, 3)
    text = text.replace("stopping: {", "decay: {d_penalty: l2, d_penalty_lambda: 1.0e-4}\nstopping: {")
    text += "    decay.d_penalty_lambda: {type: categorical, choices: [1.0e-4, 1.0e+38]}\n"
    path.write_text(text)
    return path


def test_in_a_study_diverged_trials_are_pruned_and_failing_trials_fail(diverging_recipe, tracking, tmp_path,
                                                                       monkeypatch, capsys):
    calls = {"n": 0}
    real_prepare = runner.prepare

    def flaky_prepare(recipe):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full (injected)")
        return real_prepare(recipe)

    monkeypatch.setattr(runner, "prepare", flaky_prepare)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    code, out, err = invoke(["tune", "--recipe", str(diverging_recipe), "--n-trials", "6", "--storage", storage,
                               "--study-name", "faults", "--pruner", "none", "--seed", "4", "--no-progress",
                               "--sampler-seed", "0"], capsys)  # unseeded, 1 run in 16 drew one λ only
    assert code == 0, err
    study = optuna.load_study(study_name="faults", storage=storage)
    runs = {int(r.data.tags["ganstop.trial"]): r for r in MlflowClient().search_runs(
        ["0"], "tags.`ganstop.role` = 'trial'")}
    failed = [t for t in study.trials if t.state == State.FAIL]
    assert len(study.trials) == 6 and len(failed) == 1  # the study went on after the failure
    bad = runs[failed[0].number]
    assert bad.info.status == "FAILED" and "disk full (injected)" in bad.data.tags["ganstop.error"]
    diverged = [t for t in study.trials if t.params["decay.d_penalty_lambda"] > 1 and t.state != State.FAIL]
    assert diverged and all(t.state == State.PRUNED for t in diverged)
    for t in diverged:
        assert runs[t.number].data.tags["ganstop.error"] == "diverged: non_finite_loss"
    assert any(t.state == State.COMPLETE for t in study.trials)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns


@pytest.mark.parametrize("command", [
    ["train", "--max-epochs", "20"],
    ["tune", "--recipe", str(RING), "--n-trials", "1", "--storage", "sqlite:///{tmp}/optuna.db"],
    ["promote", "--model-name", "m", "--run-id", "0" * 32],
    ["generate", "--model-uri", "models:/m@champion"],
], ids=["train", "tune", "promote", "generate"])
def test_unreachable_tracking_server_fails_fast_in_one_line(command, tmp_path, monkeypatch, capsys):
    uri = f"http://user:hunter2@127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    command = [c.replace("{tmp}", str(tmp_path)) for c in command]
    started = time.perf_counter()
    code, _, err = invoke(command, capsys)
    elapsed = time.perf_counter() - started
    assert code == 2, err
    assert err.startswith("ganstop: error: cannot reach the MLflow tracking store"), err
    assert err.count("\n") == 1 and "hunter2" not in err and "user:***@" in err, f"{elapsed:.1f} s: {err}"
    assert not (tmp_path / "optuna.db").exists()  # nothing created before the check


class SlowMlflow(http.server.BaseHTTPRequestHandler):
    """Answers the MLflow API like a busy server (after a pause longer than the probe's connect
    timeout), and anything else with 404, like a web server that is not MLflow."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        if not self.path.startswith("/api/2.0/mlflow/"):
            self.send_error(404)
            return
        time.sleep(1.5)
        body = json.dumps({"experiments": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_busy_server_is_reachable_and_a_web_server_that_is_not_mlflow_is_refused(slow_server):
    """The probe must connect fast, not answer fast: a server that accepted the connection and is
    busy (two promotions scoring beside it on 2 cores took over 5 s) is reachable."""
    from ganstop.tracking.store import check_reachable

    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(slow_server)
        check_reachable(timeout=0.5)  # answers after 1.5 s: still reachable
        mlflow.set_tracking_uri(f"{slow_server}/not-mlflow")
        with pytest.raises(rc.RecipeError, match="answered HTTP 404 to the MLflow API: it is not an MLflow tracking"):
            check_reachable(timeout=0.5)
    finally:
        mlflow.set_tracking_uri(previous)


STARTS_TOGETHER = """
import os, sys, time
from ganstop.tracking.store import open_store
from mlflow.tracking import MlflowClient
open(sys.argv[2] + ".ready", "w").close()
while not os.path.exists(sys.argv[1]):  # every process is imported and waiting: then all go at once
    time.sleep(0.01)
open_store()
MlflowClient().create_experiment(os.path.basename(sys.argv[2]))
"""


def test_commands_started_together_on_a_fresh_sqlite_store_all_work(tmp_path):
    """Without the lock, 3 of 4 died in MLflow's schema migration ("table ... already exists")."""
    go = tmp_path / "go"
    env = cli_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}")
    names = [tmp_path / f"e{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", STARTS_TOGETHER, str(go), str(name)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in names]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(Path(f"{n}.ready").exists() for n in names):
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-500:] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [e[-500:] for e in errors]
    assert sorted(e.name for e in MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()) == [
        "Default", "e0", "e1", "e2", "e3"]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A real `mlflow server --app-name basic-auth` (mlflow[auth]) with admin / the password below."""
    root = tmp_path_factory.mktemp("auth-server")
    config = root / "auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{root / 'auth.db'}\nadmin_username = admin\n"
                      "admin_password = s3cret-Pass1\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = cli_env(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY="test-only")
    yield from mlflow_server(root, "--app-name", "basic-auth", env=env)


@pytest.mark.slow
@pytest.mark.parametrize("password, code", [("s3cret-Pass1", 0), ("wrong-Pass1", 2)], ids=["right", "wrong"])
def test_an_authenticated_tracking_server_is_probed_with_mlflows_credentials(auth_server, tmp_path, password, code):
    env = cli_env(MLFLOW_TRACKING_URI=auth_server, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
    proc = subprocess.run([sys.executable, "-m", "ganstop", "train", "--recipe", str(RING), "--max-epochs", "2",
                           "--no-progress", "--set", "dataset.n_train=2000 dataset.n_val=500 train.batch_size=200 "
                           "model.width=32 stopping.warmup=0"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == code, proc.stderr[-2000:]
    if code:
        assert proc.stderr.count("\n") == 1 and "refused the credentials (HTTP 401)" in proc.stderr
        assert password not in proc.stderr
    else:
        assert "stopped at epoch 2" in proc.stdout


def test_storage_password_never_reaches_mlflow(search_recipe, tracking, postgres_url, capsys):
    secret_url = postgres_url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    code, out, err = invoke(["tune", "--recipe", str(search_recipe), "--n-trials", "2", "--storage", secret_url,
                               "--pruner", "none", "--no-progress"], capsys)
    assert code == 0, err
    assert "hunter2" not in out + err and "postgres:***@" in out
    client = MlflowClient()
    runs = client.search_runs(["0"], run_view_type=ViewType.ALL)
    assert len(runs) == 3  # parent and two trials

    def artifact_texts(run_id, path=None):
        for item in client.list_artifacts(run_id, path):
            if item.is_dir:
                yield from artifact_texts(run_id, item.path)
            else:
                yield Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=item.path)).read_bytes()

    for run in runs:
        assert "hunter2" not in json.dumps([run.data.params, run.data.tags])
        assert all(b"hunter2" not in blob for blob in artifact_texts(run.info.run_id))
    bad = postgres_url.replace("postgres@127.0.0.1:5432", "postgres:hunter2@127.0.0.1:1")
    code, _, err = invoke(["tune", "--recipe", str(search_recipe), "--storage", bad, "--no-progress"], capsys)
    assert code == 2 and "hunter2" not in err and "cannot open storage postgresql://postgres:***@" in err


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tracking, tmp_path):
    settings = ["--recipe", str(RING), "--max-epochs", "12", "--no-progress", "--set",
                "dataset.n_train=30000 dataset.n_val=500 train.batch_size=100 model.width=32 "
                "stopping.warmup=1 stopping.patience=4 stopping.min_delta=0.02 metrics.every=1 train.checkpoint_seconds=0"]
    env = cli_env(MLFLOW_TRACKING_URI=tracking)
    base = [sys.executable, "-m", "ganstop", "train"]
    straight = subprocess.run(base + settings + ["--run-name", "straight"], env=env, capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    run_id = train_then_kill(settings, env)
    client = MlflowClient()
    assert run_id and client.get_run(run_id).info.status == "RUNNING"

    resumed = subprocess.run(base + ["--resume", run_id, "--no-progress"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = client.search_runs(["0"], "attributes.run_name = 'straight'")[0]
    b = client.get_run(run_id)
    assert b.info.status == "FINISHED"
    for key in ("stopped_epoch", "restored_epoch", "best_score"):
        assert b.data.metrics[key] == a.data.metrics[key], key
    assert b.data.tags["ganstop.stop_reason"] == a.data.tags["ganstop.stop_reason"]
    # the curves have every epoch once, those the killed process never sent included
    steps = sorted(m.step for m in client.get_metric_history(run_id, "d_loss"))
    assert steps == list(range(1, int(b.data.metrics["stopped_epoch"]) + 1))


def test_a_resumed_run_sends_the_epochs_the_killed_process_never_logged(tracking):
    from ganstop.tracking.logger import MlflowLogger

    class Killed(Exception):
        pass

    class DiesBeforeSending(MlflowLogger):
        """Epoch 2's metrics never leave, and the process dies after epoch 3's checkpoint."""

        def on_epoch_end(self, epoch, logs):
            if epoch == 3:
                raise Killed
            if epoch == 1:
                super().on_epoch_end(epoch, logs)
                self.flush()

    recipe = rc.load(RING, tiny("ring8", **{"train.max_epochs": 5, "stopping.patience": 100}))
    prepared = runner.prepare(recipe)
    with mlflow.start_run() as run:
        trainer = Trainer(recipe, prepared.data, prepared.scorer, runner.checkpoint_dir(run.info.run_id),
                          [DiesBeforeSending(run.info.run_id, recipe)], progress=False)
        with pytest.raises(Killed):
            trainer.fit()
        runner.train_in_run(prepared, run.info.run_id, progress=False)
    history = MlflowClient().get_metric_history(run.info.run_id, "d_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("every", [1, 2])
def test_a_resumed_run_does_not_send_again_the_epochs_it_trains_again(tracking, every):
    """Killed after epoch 3 was logged: with metrics.every=2 the newest checkpoint is epoch 2, and
    with a torn last.pt the fallback is the one before; epoch 3 is trained again either way."""
    from ganstop.tracking.logger import MlflowLogger

    class Killed(Exception):
        pass

    class DiesAfterSending(MlflowLogger):
        def on_epoch_end(self, epoch, logs):
            super().on_epoch_end(epoch, logs)
            if epoch == 3:
                self.flush()
                raise Killed

    recipe = rc.load(RING, tiny("ring8", **{"train.max_epochs": 5, "stopping.patience": 100, "metrics.every": every}))
    prepared = runner.prepare(recipe)
    with mlflow.start_run() as run:
        folder = runner.checkpoint_dir(run.info.run_id)
        trainer = Trainer(recipe, prepared.data, prepared.scorer, folder,
                          [DiesAfterSending(run.info.run_id, recipe)], progress=False)
        with pytest.raises(Killed):
            trainer.fit()
        if every == 1:
            (folder / "last.pt").write_bytes(b"torn")  # falls back to last.pt.prev, epoch 2
        result, _ = runner.train_in_run(prepared, run.info.run_id, progress=False)
    assert result.stopped_epoch == 5
    history = MlflowClient().get_metric_history(run.info.run_id, "d_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_ctrl_c_kills_the_trial_and_exits_non_zero(tmp_path, tracking):
    slow = tmp_path / "slow.yaml"
    # every trial is long, so Ctrl-C lands mid-trial: patience alone (the forecast stops a flat tiny curve in seconds)
    slow.write_text(tiny_search_recipe(2000, 1999, short=1998).replace("warmup: 0}", "warmup: 0, criteria: [patience]}"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "ganstop", "tune", "--recipe", str(slow), "--n-trials", "3",
                             "--storage", storage, "--study-name", "ctrl-c", "--pruner", "none", "--no-progress"],
                            env=cli_env(MLFLOW_TRACKING_URI=tracking), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a CI job started in the background inherits SIGINT ignored, and then so
                            # would the command: give it the terminal's default, as a user's shell does
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1.0)  # each poll opens both sqlite files the command writes: few polls, few lock waits
        try:
            trials = optuna.load_study(study_name="ctrl-c", storage=storage).trials
        except KeyError:
            continue
        if trials and "mlflow_run_id" in trials[0].user_attrs:
            if "d_loss" in MlflowClient().get_run(trials[0].user_attrs["mlflow_run_id"]).data.metrics:
                break  # training is under way
    proc.send_signal(signal.SIGINT)
    # a bound, not a race: a write that was waiting on a sqlite lock when the interrupt came may
    # wait out the storage's 60 s busy timeout before the command ends
    _, err = proc.communicate(timeout=300)
    # Under `python -m`, CPython dies by SIGINT instead of exiting 130 when the interrupt landed in
    # exec'd code (a dataclass being built during a lazy import); a shell shows 130 either way.
    assert proc.returncode in (130, -signal.SIGINT), err[-2000:]
    assert err.strip().splitlines()[-1] == "ganstop: interrupted"
    (trial,) = optuna.load_study(study_name="ctrl-c", storage=storage).trials
    assert trial.state == State.FAIL
    run = MlflowClient().get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["ganstop.trial_state"] == "FAIL"


@pytest.mark.parametrize("policy, kept", [("best_last", ["best.pt", "last.pt"]), ("none", None),
                                          ("all", ["best.pt", "last.pt", "last.pt.prev"])])
def test_a_finished_runs_checkpoints_are_kept_as_the_recipe_says(tracking, policy, kept):
    recipe = rc.load(RING, tiny("ring8", **{"train.max_epochs": 3, "stopping.patience": 10,
                                           "train.keep_checkpoints": policy}))
    with mlflow.start_run() as run:
        runner.train_in_run(runner.prepare(recipe), run.info.run_id, progress=False)
    folder = runner.checkpoint_dir(run.info.run_id)
    assert (sorted(p.name for p in folder.iterdir()) if folder.exists() else None) == kept


def test_gc_removes_old_run_folders_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GANSTOP_CACHE", str(tmp_path))
    old, fresh = (tmp_path / "checkpoints" / name for name in ("old-run", "fresh-run"))
    for folder in (old, fresh):
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(b"x" * 2048)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old / "last.pt", (ten_days_ago, ten_days_ago))
    code, out, _ = invoke(["gc", "--older-than", "7", "--dry-run"], capsys)
    assert code == 0 and f"would remove {old}" in out and old.exists()
    code, out, _ = invoke(["gc", "--older-than", "7"], capsys)
    assert code == 0 and f"removed {old}" in out and "1 run folder(s)" in out
    assert not old.exists() and fresh.exists()
