import math

import pytest
import torch

from conftest import ROOT, tiny
from ganstop import recipe as rc
from ganstop.data.sets import load_data
from ganstop.metrics.scorer import Scorer
from ganstop.stopping.criteria import StopReason
from ganstop.training.callbacks import Callback
from ganstop.training.loop import Trainer, resolve_device

RING = ROOT / "recipes" / "ring8-mlp.yaml"


def make_trainer(tmp_path, overrides=(), callbacks=(), path=RING, name="ring8"):
    recipe = rc.load(path, tiny(name, **dict(overrides)))
    data = load_data(recipe)
    return Trainer(recipe, data, Scorer(recipe, data, torch.device("cpu")), tmp_path / "ckpt",
                   callbacks=callbacks, progress=False)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append(("start",))

    def on_validation_end(self, epoch, metrics, samples, check):
        self.events.append(("validation", epoch, sorted(metrics), None if samples is None else tuple(samples.shape)))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("epoch", epoch, sorted(logs)))

    def on_train_end(self, result):
        self.events.append(("end", result.stop_reason))


def test_fit_reports_to_callbacks_and_keeps_the_best_epoch(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, {"train.max_epochs": 3, "stopping.patience": 10}, [recorder])
    result = trainer.fit()
    assert result.stop_reason == StopReason.MAX_EPOCHS and result.stopped_epoch == 3
    kinds = [e[0] for e in recorder.events]
    assert kinds == ["start", "validation", "epoch", "validation", "epoch", "validation", "epoch", "end"]
    monitor = trainer.monitor
    assert recorder.events[1][2] == sorted(["mode_error", "hq_ratio", "mode_kl", "modes", "swd", f"{monitor}_se"])
    assert recorder.events[1][3] == (500, 2)  # every validation point, for the scatter plot
    for key in ("d_loss", "g_loss", "lr_g", "lr_d", "epoch_seconds", "samples_per_second", "swd", "mode_kl"):
        assert key in recorder.events[2][2]
    checked = [h[monitor] for h in result.history]
    best = min(checked) if trainer.mode == "min" else max(checked)
    assert result.best_value == best
    assert result.best_epoch == 1 + checked.index(best)
    best = torch.load(trainer.checkpointing.best_path, weights_only=True)
    assert best["epoch"] == result.best_epoch
    assert result.best_generator(torch.zeros(5, 16)).shape == (5, 2)


def test_validation_every_n_epochs_and_at_the_last(tmp_path):
    recorder = Recorder()
    make_trainer(tmp_path, {"train.max_epochs": 5, "metrics.every": 2, "stopping.patience": 10}, [recorder]).fit()
    assert [e[1] for e in recorder.events if e[0] == "validation"] == [2, 4, 5]


def test_checkpoint_holds_the_full_state(tmp_path):
    trainer = make_trainer(tmp_path, {"train.max_epochs": 2, "decay.g_schedule": "linear"})
    trainer.fit()
    state = torch.load(trainer.checkpointing.last_path, weights_only=True)
    assert set(state) >= {"epoch", "step", "callbacks", "schedule", "rng_cpu", "history"}
    assert set(state["step"]) == {"G", "D", "ema", "opt_g", "opt_d", "sched_g", "sched_d"}
    assert set(state["callbacks"]) == {"Validation"}  # the stopper and the best generator
    assert state["callbacks"]["Validation"]["best"]["epoch"] in (1, 2)
    assert state["step"]["ema"]["n_averaged"] > 0
    assert not list(trainer.checkpoint_dir.glob("*.tmp"))


class Counter(Callback):
    """A user's callback with state: it must carry on across a resume, as in Lightning."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)

    def state_dict(self):
        return {"epochs": list(self.epochs)}

    def load_state_dict(self, state):
        self.epochs = state["epochs"]


def test_a_callbacks_state_rides_in_the_checkpoint_and_comes_back_on_resume(tmp_path):
    settings = {"train.max_epochs": 5, "stopping.patience": 10}
    with pytest.raises(KeyboardInterrupt):  # at epoch 2, before its checkpoint (checkpointing runs last)
        make_trainer(tmp_path, settings, [Counter(), Crash()]).fit()
    again = Counter()
    trainer = make_trainer(tmp_path, settings, [again, Recorder()])
    assert trainer.resume() and again.epochs == [1] and trainer.epoch == 1
    trainer.fit()
    assert again.epochs == [1, 2, 3, 4, 5]
    state = torch.load(trainer.checkpointing.last_path, weights_only=True)
    assert state["callbacks"]["Counter"] == {"epochs": [1, 2, 3, 4, 5]} and "Recorder" not in state["callbacks"]


def test_lr_follows_the_schedule_during_training(tmp_path):
    trainer = make_trainer(tmp_path, {"train.max_epochs": 4, "stopping.patience": 10, "decay.g_schedule": "exponential",
                                      "decay.g_final_lr": 0.01, "decay.d_schedule": "none"})
    history = trainer.fit().history
    lr0 = trainer.recipe.train.lr_g
    assert [h["lr_g"] for h in history] == pytest.approx([lr0 * 0.01 ** (e / 4) for e in range(4)])
    assert [h["lr_d"] for h in history] == pytest.approx([trainer.recipe.train.lr_d] * 4)


def test_ema_generator_is_validated_and_differs_from_raw(tmp_path):
    trainer = make_trainer(tmp_path, {"train.max_epochs": 2, "ema.decay": 0.9})
    trainer.fit()
    ema_g = trainer.step.eval_generator()
    assert ema_g is not trainer.step.G
    z = torch.randn(8, 16)
    assert not torch.allclose(ema_g(z), trainer.step.G.eval()(z))


class Poison(Callback):
    """Corrupts the training data after an epoch, so the next epoch's losses are NaN."""

    def __init__(self, trainer_ref, epoch):
        self.trainer_ref, self.epoch = trainer_ref, epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            self.trainer_ref[0].step.train_data[:] = math.nan


def test_non_finite_loss_stops_and_keeps_the_earlier_best(tmp_path):
    ref = []
    trainer = make_trainer(tmp_path, {"train.max_epochs": 6, "stopping.patience": 10}, [Poison(ref, 2)])
    ref.append(trainer)
    result = trainer.fit()
    assert result.stop_reason == StopReason.NON_FINITE_LOSS and result.stopped_epoch == 3
    assert result.best_epoch in (1, 2) and result.best_generator is not None
    assert torch.isfinite(result.best_generator(torch.randn(4, 16))).all()


class Crash(Callback):
    def on_epoch_end(self, epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt


def test_resume_replays_the_uninterrupted_run(tmp_path):
    overrides = {"train.max_epochs": 4, "stopping.patience": 10}
    straight = make_trainer(tmp_path / "a", overrides).fit()
    interrupted = make_trainer(tmp_path / "b", overrides, [Crash()])
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = make_trainer(tmp_path / "b", overrides)
    assert resumed.resume() and resumed.epoch == 1  # epoch 2's checkpoint comes after the callbacks
    result = resumed.fit()
    drop = ("epoch_seconds", "samples_per_second", "validation_seconds")
    strip = lambda h: [{k: v for k, v in row.items() if k not in drop} for row in h]  # noqa: E731
    assert strip(result.history) == strip(straight.history)
    assert (result.best_epoch, result.best_value) == (straight.best_epoch, straight.best_value)


def test_images_train_with_dcgan(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, {}, [recorder], path=ROOT / "recipes" / "digits-dcgan.yaml", name="digits")
    result = trainer.fit()
    assert result.stopped_epoch == 2
    validation = [e for e in recorder.events if e[0] == "validation"][0]
    assert validation[2] == ["class_coverage", "class_kl", "coverage", "coverage_se", "density", "density_se", "fid",
                             "fid_se", "kid", "kid_std", "precision", "precision_se", "recall", "recall_se"]
    assert validation[3] == (64, 1, 8, 8)
    out = result.best_generator(torch.randn(3, 32))
    assert out.shape == (3, 1, 8, 8) and out.min() >= 0 and out.max() <= 1


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")  # the error path only exists without one
    with pytest.raises(rc.RecipeError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("family, shape", [("mlp", (2,)), ("dcgan", (1, 8, 8)), ("dcgan", (3, 32, 32))])
@pytest.mark.parametrize("norm", ["batch", "none", "spectral"])
def test_every_family_and_discriminator_norm_trains_a_step(family, shape, norm):
    from ganstop.training import models

    recipe = rc.Recipe(model=rc.ModelConfig(family=family, z_dim=8, width=16, depth=2, d_norm=norm))
    G, D = models.build(recipe, shape)
    fake = G(torch.randn(4, 8))
    assert fake.shape == (4, *shape)
    loss = torch.nn.functional.softplus(D(fake)).mean()
    loss.backward()
    assert D(fake).shape == (4,) and all(p.grad is not None for p in G.parameters())
    spectral = [name for name, _ in D.named_parameters() if "parametrizations" in name]
    batch = [m for m in D.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert bool(spectral) == (norm == "spectral") and bool(batch) == (norm == "batch")


def test_each_check_logs_the_monitors_standard_error_and_the_stopper_uses_it(tmp_path):
    trainer = make_trainer(tmp_path, {"train.max_epochs": 3, "stopping.warmup": 0, "stopping.min_delta": "auto",
                                      "stopping.patience": 10})
    result = trainer.fit()
    monitor = result.monitor
    errors = [h[f"{monitor}_se"] for h in result.history]
    assert len(errors) == 3 and all(e >= 0 for e in errors) and any(e > 0 for e in errors)
    assert [c[2] for c in trainer.stopper.checks] == errors
    assert not any(k.endswith("_se") and k != f"{monitor}_se" for k in result.history[0])  # only the monitor pays


class NanMetric:
    """An scorer whose monitored value is NaN at every check."""

    def __init__(self, scorer, monitor):
        self.scorer, self.monitor = scorer, monitor

    def __call__(self, samples):
        return {**self.scorer(samples), self.monitor: math.nan}


@pytest.mark.parametrize("check_finite", [True, False])
def test_a_nan_at_the_first_check_stops_or_runs_on_without_crashing(tmp_path, check_finite):
    trainer = make_trainer(tmp_path, {"train.max_epochs": 3, "stopping.warmup": 0, "stopping.check_finite": check_finite})
    trainer.validation.scorer = NanMetric(trainer.validation.scorer, trainer.monitor)
    result = trainer.fit()
    expected = (StopReason.NON_FINITE_METRIC, 1) if check_finite else (StopReason.MAX_EPOCHS, 3)
    assert (result.stop_reason, result.stopped_epoch) == expected
    assert result.best_epoch is None and result.best_generator is None


def test_r1_penalty_is_the_squared_gradient_norm_on_real_data(tmp_path):
    from ganstop.training.losses import r1_penalty as _r1_penalty

    linear = torch.nn.Linear(2, 1)
    real = torch.randn(16, 2, requires_grad=True)
    penalty = _r1_penalty(linear(real).squeeze(1), real)
    assert penalty.item() == pytest.approx(linear.weight.square().sum().item())  # grad of w.x is w, for each x
    penalty.backward()  # create_graph: the penalty trains D
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    one = {"train.max_epochs": 1, "stopping.warmup": 0}
    plain = make_trainer(tmp_path / "a", one).fit().history[0]["d_loss"]
    with_r1 = make_trainer(tmp_path / "b", {**one, "train.r1_gamma": 10.0}).fit().history[0]["d_loss"]
    assert math.isfinite(with_r1) and with_r1 > plain  # same seed, same data: the penalty is on top


def test_the_test_split_is_disjoint_and_scores_only_the_final_generator(tmp_path):
    from ganstop.data.sets import _split

    index = torch.arange(100).float().view(100, 1, 1, 1)
    data = _split(index, torch.arange(100) % 2, 0.2, 0.1, seed=0)
    train, val, test = ({int(v) for v in part.flatten()} for part in (data.train, data.val, data.test))
    assert (len(train), len(val), len(test)) == (70, 20, 10) and train | val | test == set(range(100))

    recipe = rc.load(RING, tiny("ring8", **{"train.max_epochs": 3}))
    ring = load_data(recipe)
    test_scorer = Scorer(recipe, ring.test_split(), torch.device("cpu"))
    assert not torch.equal(test_scorer._ctx.reference, Scorer(recipe, ring, torch.device("cpu"))._ctx.reference)
    trainer = make_trainer(tmp_path, {"train.max_epochs": 3})
    trainer.test_scorer = test_scorer
    result = trainer.fit()
    assert set(result.test_metrics) >= {"modes", "hq_ratio", "swd", trainer.monitor}
    assert trainer._test_scores(result.best_generator) == result.test_metrics  # seeded: reproducible
    assert result.test_metrics[trainer.monitor] != result.best_value  # other reference, other latents
    assert not any(k.startswith("test_") for h in result.history for k in h)  # the curves are validation only


def test_wgan_gp_penalty_is_zero_for_a_unit_gradient_and_grows_away_from_it():
    from ganstop.training.losses import gradient_penalty

    real, fake = torch.randn(64, 2), torch.randn(64, 2)
    for scale, expected in ((1.0, 0.0), (3.0, 4.0)):
        critic = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            critic.weight.copy_(torch.tensor([[0.6, 0.8]]) * scale)  # ||grad D|| = scale everywhere
        assert gradient_penalty(critic, real, fake).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_each_objective_trains_with_finite_losses(tmp_path, loss):
    trainer = make_trainer(tmp_path, {"train.max_epochs": 2, "train.loss": loss, "train.r1_gamma": 0.1})
    result = trainer.fit()
    assert result.stop_reason == StopReason.MAX_EPOCHS
    assert all(math.isfinite(h["d_loss"]) and math.isfinite(h["g_loss"]) for h in result.history)


def test_wgan_gp_refuses_a_batch_norm_critic():
    with pytest.raises(rc.RecipeError, match="set model.d_norm=none"):
        rc.load(ROOT / "recipes" / "digits-dcgan.yaml", [("train.loss", "wgan-gp")])



@pytest.mark.parametrize("overrides, d_compiled", [({"train.r1_gamma": 0.1}, False),
                                                   ({"train.loss": "wgan-gp", "train.r1_gamma": 0.0}, False),
                                                   ({"train.r1_gamma": 0.0}, True)], ids=["r1", "wgan-gp", "none"])
def test_compile_leaves_d_eager_under_a_gradient_penalty(tmp_path, monkeypatch, overrides, d_compiled):
    """torch.compile has no double backward, and R1 and WGAN-GP differentiate through D twice:
    G is compiled, D only without such a penalty. AOTAutograd alone (backend aot_eager) refuses
    the double backward as inductor does, without building kernels on these cores."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    trainer = make_trainer(tmp_path, {"train.max_epochs": 2, "train.compile": True, "model.width": 8,
                                      "dataset.n_train": 400, **overrides})
    assert hasattr(trainer.step.G_step, "_orig_mod") and hasattr(trainer.step.D_step, "_orig_mod") == d_compiled
    assert math.isfinite(trainer.fit().history[-1]["d_loss"])
