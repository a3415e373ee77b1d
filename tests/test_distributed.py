"""One run on several processes (torchrun, gloo on these CPU cores): the same numbers as one
process, one MLflow run, one stop on every rank, and faults that end or resume the group.

Faults are injected without a hook in the product: a ``sitecustomize`` module on the workers'
PYTHONPATH wraps ``GANStep.train_epoch`` on the rank and epoch the test names, so the failure
lands at a known epoch instead of racing a timer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import ROOT, all_runs, cli_env, mlflow_run

pytestmark = pytest.mark.slow

RING = ROOT / "recipes" / "ring8-mlp.yaml"
DIGITS = ROOT / "recipes" / "digits-dcgan.yaml"
# ring8 has no batch norm (d_norm none, MLP generator) and trains with R1: an autograd.grad
# penalty, the known DDP trap; a global batch of 64
RING_SETTINGS = ["--recipe", str(RING), "--set", "dataset.n_train=1024", "--set", "dataset.n_val=256",
                 "--set", "train.batch_size=64", "--set", "model.width=32", "--set", "stopping.monitor=swd",
                 "--set", "stopping.warmup=1", "--set", "stopping.patience=2", "--set", "metrics.n_samples=0",
                 "--set", "metrics.every=1", "--set", "train.checkpoint_seconds=0", "--max-epochs", "6",
                 "--no-progress"]
DIGITS_SETTINGS = ["--recipe", str(DIGITS), "--set", "model.width=16", "--set", "metrics.classifier_epochs=3",
                   "--set", "metrics.every=1", "--set", "train.checkpoint_seconds=0", "--set", "stopping.warmup=1",
                   "--max-epochs", "3", "--no-progress"]

FAULT = '''
import os
if int(os.environ.get("RANK", "-1")) == {rank} and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
    from ganstop.training import gan_step

    original = gan_step.GANStep.train_epoch

    def train_epoch(self, epoch):
        if epoch == {epoch}:
            {action}
        return original(self, epoch)

    gan_step.GANStep.train_epoch = train_epoch
'''


def fault(tmp_path: Path, rank: int, epoch: int, action: str) -> dict[str, str]:
    """Environment whose workers run ``action`` on ``rank`` at the start of ``epoch`` (first attempt only)."""
    site = tmp_path / "fault"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(FAULT.format(rank=rank, epoch=epoch, action=action))
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def train(*args: str, env: dict[str, str] | None = None, command: list[str] | None = None) -> subprocess.CompletedProcess:
    """The command in a session of its own: a hang fails the test and takes every worker with it."""
    base = command or [sys.executable, "-m", "ganstop", "train"]
    proc = subprocess.Popen([*base, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(**(env or {})), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def outcome(run) -> dict:
    """What must not depend on the number of processes: per-epoch losses and metrics, the stop."""
    client = MlflowClient()
    curves = {key: [m.value for m in client.get_metric_history(run.info.run_id, key)]
              for key in ("d_loss", "g_loss", "swd", "fid")}
    finals = {k: run.data.metrics.get(k) for k in ("stopped_epoch", "restored_epoch")}
    return {"curves": curves, **finals, "reason": run.data.tags.get("ganstop.stop_reason")}


def assert_same(got: dict, expected: dict, rel: float = 1e-5) -> None:
    """The same stop and, within float tolerance (gloo sums the ranks' gradients in another
    order than one process sums its batch), the same curves."""
    assert {k: v for k, v in got.items() if k != "curves"} == {k: v for k, v in expected.items() if k != "curves"}
    for key, values in expected["curves"].items():
        assert got["curves"][key] == pytest.approx(values, rel=rel), key


def only_run():
    runs = all_runs()
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_what_one_process_trains_at_the_same_global_batch(tracking, tmp_path):
    one = train(*RING_SETTINGS)
    assert one.returncode == 0, one.stderr[-3000:]
    single = outcome(only_run())
    MlflowClient().delete_run(only_run().info.run_id)

    two = train(*RING_SETTINGS, "--nproc", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    run = only_run()  # exactly one run for both processes
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert single["curves"]["d_loss"] and single["curves"]["swd"]
    assert_same(outcome(run), single)
    assert run.data.tags["ganstop.gpu"].endswith(": cpu")
    models = MlflowClient().search_logged_models([run.info.experiment_id])
    assert [m.source_run_id for m in models].count(run.info.run_id) == 1  # one logged model


def test_synchronised_batch_norm_trains_what_one_process_trains(tracking):
    settings = [*DIGITS_SETTINGS, "--set", "train.sync_batchnorm=true"]
    one = train(*settings)
    assert one.returncode == 0, one.stderr[-3000:]
    single = outcome(only_run())
    MlflowClient().delete_run(only_run().info.run_id)

    two = train(*settings, "--nproc", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(single["curves"]["fid"]) == 3
    assert_same(outcome(only_run()), single, rel=1e-4)


def test_every_rank_stops_at_the_same_epoch_whatever_its_own_stopper_says(tmp_path):
    # rank 1's own stopper is made to fire at its first check (a threshold every value meets);
    # rank 0's never fires: the group must still stop together, at that check
    script = tmp_path / "stop.py"
    script.write_text(f'''
import sys, torch
from ganstop.training import distributed
from ganstop import recipe as rc
from ganstop.data.sets import load_data
from ganstop.metrics.scorer import Scorer
from ganstop.training.loop import Trainer
settings = [("dataset.n_train", 512), ("dataset.n_val", 128), ("train.batch_size", 64), ("train.max_epochs", 5),
            ("model.width", 16), ("stopping.monitor", "swd"), ("stopping.warmup", 0), ("metrics.every", 1),
            ("metrics.n_samples", 0)]
recipe = rc.load({str(RING)!r}, settings)
distributed.join("cpu")
data = load_data(recipe)
scorer = Scorer(recipe, data, torch.device("cpu")) if distributed.is_main() else None
trainer = Trainer(recipe, data, scorer, {str(tmp_path)!r} + "/ckpt", device=torch.device("cpu"), progress=False)
if distributed.rank() == 1:
    trainer.stopper.stopping_threshold = 1e9
result = trainer.fit()
print("RANK", distributed.rank(), result.stopped_epoch, result.stop_reason, flush=True)
distributed.leave()
''')
    done = train(str(script), command=[sys.executable, "-m", "torch.distributed.run", "--standalone",
                                       "--nproc-per-node", "2"])
    # stdout too: whether each rank printed its stop tells a teardown abort from one mid-run
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    stops = sorted(line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RANK"))
    assert stops == [["0", "1", "max_epochs"], ["1", "1", "stopping_threshold"]]


def test_a_killed_rank_restarts_the_group_which_resumes_to_the_uninterrupted_result(tracking, tmp_path):
    straight = train(*RING_SETTINGS, "--nproc", "2")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = outcome(only_run())
    MlflowClient().delete_run(only_run().info.run_id)

    kill = fault(tmp_path, rank=1, epoch=4, action="os.kill(os.getpid(), 9)")  # kill -9, mid-run
    resumed = train(*RING_SETTINGS, "--nproc", "2", "--max-restarts", "1", env=kill)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = only_run()
    assert run.info.status == "FINISHED"
    assert_same(outcome(run), expected, rel=1e-9)


def test_a_rank_that_raises_ends_every_rank_with_one_line_and_a_failed_run(tracking, tmp_path):
    boom = fault(tmp_path, rank=1, epoch=2, action='raise RuntimeError("injected failure on rank 1")')
    done = train(*RING_SETTINGS, "--nproc", "2", env=boom)
    assert done.returncode == 1
    ours = [line for line in done.stderr.splitlines() if line.startswith("ganstop: error:")]
    assert len(ours) == 1 and "the data-parallel train failed: rank 1 exited with code 1" in ours[0]
    assert "injected failure on rank 1" in done.stderr  # the failing rank's own error, above it
    assert only_run().info.status == "FAILED"


def test_resume_on_another_world_size_is_refused_in_one_line(tracking, tmp_path):
    boom = fault(tmp_path, rank=1, epoch=3, action='raise RuntimeError("stop here")')
    assert train(*RING_SETTINGS, "--nproc", "2", env=boom).returncode == 1
    run_id = only_run().info.run_id
    refused = train("--resume", run_id, "--no-progress")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"ganstop: error: run {run_id} trained on 2 process(es); resume it on as many (--nproc 2), not 1")
    resumed = train("--resume", run_id, "--nproc", "2", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert only_run().info.status == "FINISHED" and only_run().data.metrics["stopped_epoch"] >= 3


def test_two_machines_joined_by_a_rendezvous_make_one_run_with_each_nodes_system_metrics(tracking, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    metrics_on = {"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "true", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes", "-m", "ganstop", "train",
            *RING_SETTINGS]
    nodes = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env(**metrics_on)) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in nodes]
    assert [code for code, _ in results] == [0, 0], "\n".join(err[-2000:] for _, err in results)
    run = only_run()
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    nodes = {key.split("/")[1] for key in run.data.metrics if key.startswith("system/")}
    assert nodes == {"node0", "node1"}  # one monitor per node, none from the run itself


@pytest.mark.gpu
def test_nccl_on_every_visible_gpu_trains_what_one_gpu_trains(tracking):
    gpus = torch.cuda.device_count()
    settings = [*RING_SETTINGS, "--device", "cuda", "--set", f"train.batch_size={64 * gpus}"]
    one = train(*settings)
    assert one.returncode == 0, one.stderr[-3000:]
    single = outcome(only_run())
    MlflowClient().delete_run(only_run().info.run_id)
    many = train(*settings, "--nproc", str(gpus))
    assert many.returncode == 0, many.stderr[-3000:]
    run = only_run()
    assert run.data.params["world_size"] == str(gpus)
    got = outcome(run)
    assert (got["stopped_epoch"], got["restored_epoch"]) == (single["stopped_epoch"], single["restored_epoch"])
    for key in ("d_loss", "g_loss"):  # NCCL sums in another order than one GPU's kernels: close, not equal
        assert got["curves"][key] == pytest.approx(single["curves"][key], rel=1e-2)


def test_tune_on_two_processes_leaves_one_run_per_trial_with_optunas_states(search_recipe, tracking, tmp_path):
    import optuna

    from test_study import assert_mirrored

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # the threshold pruner prunes the long-patience trials at epoch 2, on both ranks at once
    done = train("--recipe", str(search_recipe), "--n-trials", "4", "--storage", storage, "--study-name", "two",
                 "--pruner", "threshold", "--prune-upper", "-1", "--prune-warmup-epochs", "2", "--sampler-seed", "3",
                 "--no-progress", "--nproc", "2", command=[sys.executable, "-m", "ganstop", "tune"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best trial" in done.stdout
    study = optuna.load_study(study_name="two", storage=storage)
    states = {t.state for t in study.trials}
    assert len(study.trials) == 4 and states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    _, runs = assert_mirrored(MlflowClient(), study)
    assert {r.data.params["world_size"] for r in runs.values()} == {"2"}


def test_mlflow_run_with_nproc_makes_one_run_on_two_processes(tracking):
    overrides = ("dataset.n_train=1024 dataset.n_val=256 train.batch_size=64 model.width=32 stopping.monitor=swd stopping.warmup=1 "
                 "metrics.n_samples=0 metrics.every=1")
    done = mlflow_run("main", f"recipe={RING}", f"overrides={overrides}", "max_epochs=3", "nproc=2",
                      env=cli_env(MLFLOW_TRACKING_URI=tracking))
    assert done.returncode == 0, done.stderr[-3000:]
    run = only_run()  # the run `mlflow run` made is the one both processes trained in
    assert run.info.status == "FINISHED" and run.data.params["world_size"] == "2"
    assert run.data.metrics["stopped_epoch"] == 3


def test_a_global_batch_that_does_not_split_is_one_line_before_anything_starts(tracking):
    done = train(*RING_SETTINGS, "--set", "train.batch_size=65", "--nproc", "2")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ganstop: error: train.batch_size=65 is the global batch and must split evenly over 2 processes"]
    assert all_runs() == []


def test_the_workers_run_the_command_without_the_launchers_own_options():
    from ganstop.tracking.launch import worker_argv

    argv = ["train", "--nproc", "2", "--recipe", "x", "--max-restarts=1", "--nproc=4", "--set", "a.b=1"]
    assert worker_argv(argv) == ["train", "--recipe", "x", "--set", "a.b=1"]
