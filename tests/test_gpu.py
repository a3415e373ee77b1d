"""The CUDA paths, run for real where there is a GPU (`pytest -m gpu`); skipped elsewhere."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, cli_env, tiny, train_then_kill
from ganstop import recipe as rc
from ganstop.data.sets import load_data
from ganstop.metrics.scorer import Scorer
from ganstop.training.loop import Trainer

pytestmark = pytest.mark.gpu
DIGITS = ROOT / "recipes" / "digits-dcgan.yaml"
RING = ROOT / "recipes" / "ring8-mlp.yaml"


def trainer(tmp_path, path, name, **overrides) -> Trainer:
    recipe = rc.load(path, tiny(name, **{"train.device": "cuda", **overrides}))
    data = load_data(recipe)
    return Trainer(recipe, data, Scorer(recipe, data, torch.device("cuda")), tmp_path / "ckpt", progress=False)


def test_digits_train_in_bf16_channels_last_and_score_in_fp32(tmp_path):
    t = trainer(tmp_path, DIGITS, "digits", **{"train.max_epochs": 3})
    assert t.step.amp and t.step.channels_last and t.step.resident
    result = t.fit()
    assert all(torch.isfinite(torch.tensor(h["fid"])) for h in result.history)
    assert t.step.G.project.weight.is_cuda
    assert t.step.generate(t.validation.z[:8]).dtype == torch.float32


def test_a_2d_run_trains_and_samples_in_fp32(tmp_path):
    t = trainer(tmp_path, RING, "ring8")
    assert not t.step.amp  # bf16 would quantise points near radius 1 to ~0.008, the ring's std is 0.01
    t.fit()
    samples = t.step.generate(t.validation.z)
    assert samples.dtype == torch.float32
    assert samples.unique().numel() > 0.9 * samples.numel()  # not snapped to a bf16 grid


def test_compile(tmp_path):
    result = trainer(tmp_path, DIGITS, "digits", **{"train.compile": True}).fit()
    assert result.best_generator is not None


def test_the_non_resident_data_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1, 1))  # nothing fits: pinned host data
    t = trainer(tmp_path, DIGITS, "digits")
    assert not t.step.resident and t.step.train_data.is_pinned()
    assert torch.isfinite(torch.tensor(t.fit().history[-1]["fid"]))


def test_resume_after_a_kill_on_the_gpu(tracking, tmp_path):
    settings = ["--recipe", str(DIGITS), "--max-epochs", "6", "--device", "cuda", "--no-progress", "--set",
                "stopping.warmup=1 metrics.classifier_epochs=3 model.width=16 metrics.every=1 train.checkpoint_seconds=0"]
    env = cli_env(MLFLOW_TRACKING_URI=tracking)
    run_id = train_then_kill(settings, env)
    resumed = subprocess.run([sys.executable, "-m", "ganstop", "train", "--resume", run_id, "--no-progress"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # CUDA RNG states restored from CPU tensors
    from mlflow.tracking import MlflowClient

    assert MlflowClient().get_run(run_id).info.status == "FINISHED"


def test_a_checkpoint_holds_the_training_gpus_rng_state_and_a_resume_restores_it(tmp_path):
    """This process's GPU alone: every rank draws the same stream, so rank 0's state is each
    rank's to restore on its own GPU, and a machine with another number of GPUs can resume."""
    t = trainer(tmp_path, DIGITS, "digits")
    t.fit()
    state = t.state_dict()
    assert torch.equal(state["rng_cuda"], torch.cuda.get_rng_state(t.device))
    resumed = trainer(tmp_path, DIGITS, "digits")  # seeded afresh: its GPU state is the start's
    assert not torch.equal(torch.cuda.get_rng_state(resumed.device), state["rng_cuda"])
    resumed.load_state_dict(state)
    assert torch.equal(torch.cuda.get_rng_state(resumed.device), state["rng_cuda"])


def test_inception_features_on_the_gpu_equal_the_cpus(tmp_path):
    """The Inception metrics score on the run's device: the same images give the same pool
    features there as on the CPU (float32 convolutions, cuDNN's algorithms: to 1e-3)."""
    from test_inception import random_weights

    from ganstop.metrics.inception import Inception

    path = random_weights(tmp_path / "fid-inception-random.pth")
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cpu = Inception(path, torch.device("cpu")).features(images)
    gpu = Inception(path, torch.device("cuda")).features(images).cpu()
    worst = ((gpu - cpu).abs() / (cpu.abs() + 1e-4)).max().item()
    assert torch.allclose(gpu, cpu, rtol=1e-3, atol=1e-4), f"largest relative difference {worst:.2e}"
