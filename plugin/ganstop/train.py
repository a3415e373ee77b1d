"""The training loop: epochs, validation on held-out data, best-epoch checkpoint, resume.

It knows neither MLflow nor Optuna: it reports through ``Callback`` methods, and a callback
that raises (an Optuna pruner, say) ends training with that exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ganstop import models, optim, plugins
from ganstop.losses import r1_penalty
from ganstop.cadence import CheckSchedule
from ganstop.checkpoint import load_first_readable, save_atomic
from ganstop.data import Data
from ganstop.metrics.scorer import Scorer
from ganstop.errors import RecipeError
from ganstop.recipe import Recipe
from ganstop.stopping import Check, EarlyStopper

GEN_CHUNK = 1024


class Callback:
    """Hooks the loop calls; every method is optional. Validation samples, when the check is
    one that draws a picture (``metrics.grid_every``, a new best, the last check): up to
    metrics.grid_size images, or every generated point for 2D data; None otherwise."""

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_validation_end(self, epoch: int, metrics: dict[str, float], samples: torch.Tensor | None,
                          check: Check) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    monitor: str
    mode: str
    stop_reason: str  # a StopReason value; several joined by '+' when `combine: all` fired
    stopped_epoch: int
    best_epoch: int | None
    best_value: float | None
    best_generator: nn.Module | None  # models.Sampler with the best-epoch (EMA) weights, on CPU
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    overhead_share: float = 0.0  # time in the loop besides training, as a share of training time
    test_metrics: dict[str, float] = field(default_factory=dict)  # the best generator on the test split


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RecipeError(f"train.device={name} but no CUDA GPU is visible; use device=auto or cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RecipeError(f"train.device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
    return torch.device(name)


class Trainer:
    """One GAN training run over a recipe; ``fit()`` runs it, ``state_dict()`` checkpoints it."""

    def __init__(self, recipe: Recipe, data: Data, scorer: Scorer, checkpoint_dir: Path,
                 callbacks: list[Callback] = (), device: torch.device | None = None, progress: bool = True,
                 test_scorer: Scorer | None = None):
        self.recipe, self.data, self.scorer, self.test_scorer = recipe, data, scorer, test_scorer
        self.callbacks, self.progress = list(callbacks), progress
        self.device = device or resolve_device(recipe.train.device)
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick kernels once
        # bf16 resolves about 0.008 near radius 1, close to the ring's std (0.01): 2D MLPs stay fp32
        self.amp = recipe.train.amp and cuda and data.kind == "image"
        self.channels_last = recipe.train.channels_last and cuda and data.kind == "image"
        fmt = torch.channels_last if self.channels_last else torch.preserve_format

        torch.manual_seed(recipe.train.seed)
        self.G, self.D = (m.to(self.device, memory_format=fmt) for m in models.build(recipe, data.sample_shape))
        tc, dc = recipe.train, recipe.decay
        self.opt_g = optim.optimizer(self.G, tc.lr_g, (tc.beta1, tc.beta2), dc.g_weight_decay)
        self.opt_d = optim.optimizer(self.D, tc.lr_d, (tc.beta1, tc.beta2), dc.d_weight_decay)
        self.sched_g = optim.scheduler(self.opt_g, dc.g_schedule, dc.g_final_lr, tc.max_epochs, dc.step_every)
        self.sched_d = optim.scheduler(self.opt_d, dc.d_schedule, dc.d_final_lr, tc.max_epochs, dc.step_every)
        self.ema = optim.ema(self.G, recipe.ema.decay) if recipe.ema.enabled else None
        self.G_step, self.D_step = (torch.compile(m) if tc.compile else m for m in (self.G, self.D))

        self.monitor, self.mode = scorer.selection.monitor, scorer.selection.mode
        self.stopper = EarlyStopper.from_config(recipe.stopping, self.mode)
        # Resident on the GPU when it fits in a quarter of free memory (no copies per step);
        # otherwise pinned host memory, gathered into a pinned batch and copied asynchronously.
        self.fmt = fmt
        self.resident = not cuda or data.train.nbytes < 0.25 * torch.cuda.mem_get_info(self.device)[0]
        if self.resident:
            self.train_data = data.train.to(self.device, memory_format=fmt) if data.kind == "image" else data.train.to(self.device)
        else:
            self.train_data = data.train.pin_memory()
            # two pinned buffers: one is gathered into while the other's copy is in flight
            self._buffers = [torch.empty((recipe.train.batch_size, *data.sample_shape)).pin_memory() for _ in range(2)]
            self._copied: list[torch.cuda.Event | None] = [None, None]
        # The best generator lives in memory; best.pt is written with the next full checkpoint,
        # so a crash loses at most one checkpoint interval and best.pt always matches last.pt.
        self.best_state: dict | None = None
        self._best_saved = True
        self.schedule = CheckSchedule(recipe.metrics.budget, recipe.metrics.every)
        self._saved_at = time.monotonic()
        gen = torch.Generator().manual_seed(recipe.train.seed + 1)
        self.val_z = torch.randn(scorer.n_samples, recipe.model.z_dim, generator=gen).to(self.device)
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    # ----- checkpoints -------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "stopper": self.stopper.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "history": self.history,
            "schedule": self.schedule.state_dict(),
            "best": self.best_state,  # rides along, so best.pt always matches the stopper on resume
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.history = state["epoch"], state["history"]
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.stopper.load_state_dict(state["stopper"])
        self.schedule.load_state_dict(state.get("schedule", {}))  # absent before ganstop 0.3
        self.best_state = state["best"]
        if self.best_state is not None:
            save_atomic(self.best_state, self.best_path)
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng_cuda"])

    def save_checkpoint(self) -> None:
        """The full resumable state (and the best generator, if it changed since the last one)."""
        if not self._best_saved and self.best_state is not None:
            save_atomic(self.best_state, self.best_path)
            self._best_saved = True
        save_atomic(self.state_dict(), self.last_path, keep_previous=True)
        self._saved_at = time.monotonic()

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.recipe.train.checkpoint_seconds

    def resume(self) -> bool:
        """Continue from the newest readable full checkpoint; False when starting fresh."""
        state = load_first_readable([self.last_path, self.last_path.with_name("last.pt.prev")])
        if state is None:
            return False
        self.load_state_dict(state)
        return True

    # ----- one epoch -----------------------------------------------------------------------
    def eval_generator(self) -> nn.Module:
        """The weights that are validated and saved: EMA once it has started, else raw G."""
        if self.ema is not None and self.ema.n_averaged.item() > 0:
            return self.ema.module
        return self.G

    def _train_epoch(self) -> dict[str, float]:
        tc = self.recipe.train
        penalty_kind, lam = self.recipe.decay.d_penalty, self.recipe.decay.d_penalty_lambda
        r1, objective = tc.r1_gamma, plugins.load("losses", tc.loss)
        use_ema = self.ema is not None and self.epoch >= self.recipe.ema.start_epoch
        n, batch = len(self.train_data), min(tc.batch_size, len(self.train_data))
        steps = n // batch
        order = torch.randperm(n, device=self.device if self.resident else "cpu")
        d_sum = torch.zeros((), device=self.device)
        g_sum = torch.zeros((), device=self.device)
        self.G.train()
        self.D.train()
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        for step in range(steps):
            real = self._real_batch(order[step * batch:(step + 1) * batch], step)
            for _ in range(tc.d_steps):
                z = torch.randn(batch, self.recipe.model.z_dim, device=self.device)
                real_in = real.detach().requires_grad_() if r1 else real
                with autocast:
                    fake = self.G_step(z)
                    real_logits = self.D_step(real_in)
                    d_loss = objective.discriminator(real_logits, self.D_step(fake.detach()))
                    if objective.penalty is not None:
                        d_loss = d_loss + tc.gp_lambda * objective.penalty(self.D_step, real, fake)
                    if r1:
                        d_loss = d_loss + r1 / 2 * r1_penalty(real_logits, real_in)
                    if penalty_kind != "none":
                        d_loss = d_loss + lam * optim.weight_penalty(self.D, penalty_kind)
                self.opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                self.opt_d.step()
            with autocast:
                g_loss = objective.generator(self.D_step(fake))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            if use_ema:
                self.ema.update_parameters(self.G)
            d_sum += d_loss.detach()
            g_sum += g_loss.detach()
        lrs = {"lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}
        self.sched_g.step()
        self.sched_d.step()
        means = torch.stack([d_sum, g_sum]).div(steps).tolist()  # one host sync per epoch
        return {"d_loss": means[0], "g_loss": means[1], **lrs, "samples": float(steps * batch)}

    def _real_batch(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        if self.resident:
            return self.train_data[idx]
        slot = step % 2
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # its previous copy must be done before we overwrite it
        host = torch.index_select(self.train_data, 0, idx, out=self._buffers[slot][: len(idx)])
        real = host.to(self.device, non_blocking=True, memory_format=self.fmt)
        self._copied[slot] = torch.cuda.Event()
        self._copied[slot].record()
        return real

    @torch.no_grad()
    def generate(self, z: torch.Tensor, generator: nn.Module | None = None) -> torch.Tensor:
        """Samples in user units: images in [0, 1], points as coordinates. In fp32, never under
        autocast: the scores must be the ones promotion computes from the fp32 MLflow model."""
        sampler = models.Sampler(generator or self.eval_generator(), self.data.kind == "image").eval()
        return torch.cat([sampler(chunk) for chunk in z.split(GEN_CHUNK)])

    def _validate(self, last: bool) -> tuple[dict[str, float], torch.Tensor | None, Check]:
        # Validation must not move the training RNG: the trajectory is then the same whatever
        # the validation schedule, and a resumed run replays the uninterrupted one.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.recipe.train.seed + 2)
            samples = self.generate(self.val_z)
            metrics = self.scorer(samples)
        check = self.stopper.update(self.epoch, metrics[self.monitor], metrics.get(f"{self.monitor}_se"))
        if check.is_best:
            generator = {k: v.detach().to("cpu", copy=True) for k, v in self.eval_generator().state_dict().items()}
            self.best_state = {"epoch": self.epoch, "value": metrics[self.monitor], "generator": generator}
            self._best_saved = False
        n = 1 + sum(self.monitor in h for h in self.history)  # this check's number (it is not in the history yet)
        drawn = check.is_best or last or check.stop or n == 1 or n % self.recipe.metrics.grid_every == 0
        if not drawn:
            return metrics, None, check
        shown = samples[: self.recipe.metrics.grid_size] if self.data.kind == "image" else samples  # a scatter wants all
        return metrics, shown.cpu(), check

    # ----- the run -----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to the end of the budget or the stopper's word. Per epoch: train, then a check
        when the schedule says so, then a full checkpoint when ``train.checkpoint_seconds`` have
        passed; a last checkpoint at the end. Everything but training is timed into the schedule."""
        last_epoch = self.recipe.train.max_epochs
        started = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.schedule.spent(0.0, time.perf_counter() - started, checked=False)  # params, recipe: paid by checks
        first = self.epoch + 1 if not self.stopper.stopped else last_epoch + 1  # resuming a finished run
        bar = tqdm(range(first, last_epoch + 1), initial=self.epoch, total=last_epoch,
                   desc="epochs", unit="epoch", disable=not self.progress, dynamic_ncols=True)
        for epoch in bar:
            self.epoch = epoch
            t0 = time.perf_counter()
            logs = self._train_epoch()
            trained = time.perf_counter()
            logs["epoch_seconds"] = trained - t0
            logs["samples_per_second"] = logs.pop("samples") / (trained - t0)
            stop = self.stopper.update_losses(epoch, {"d_loss": logs["d_loss"], "g_loss": logs["g_loss"]})
            checked = stop is None and self.schedule.due(epoch, last_epoch)
            if checked:
                metrics, samples, check = self._validate(last=epoch == last_epoch)
                logs.update(metrics)
                logs["validation_seconds"] = time.perf_counter() - trained
                stop = check.stop
                for cb in self.callbacks:
                    cb.on_validation_end(epoch, metrics, samples, check)
                best = self.stopper.best
                bar.set_postfix({self.monitor: f"{metrics[self.monitor]:.4g}",
                                 "best": "-" if best is None else f"{best:.4g}@{self.stopper.best_epoch}"})
            self.history.append({"epoch": epoch, **logs})
            if stop is None and epoch < last_epoch and self._checkpoint_due():
                self.save_checkpoint()
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
            self.schedule.spent(trained - t0, time.perf_counter() - trained, checked)
            if stop is not None:
                break
        bar.close()
        if not self.stopper.stopped:
            self.stopper.exhaust(self.epoch)
        self.save_checkpoint()
        best = self.best_sampler()
        result = TrainResult(self.monitor, self.mode, self.stopper.stop_reason, self.stopper.stopped_epoch,
                             self.stopper.best_epoch, self.stopper.best, best, self.history,
                             time.perf_counter() - started, self.schedule.share(), self._test_scores(best))
        for cb in self.callbacks:
            cb.on_train_end(result)
        return result

    @torch.no_grad()
    def _test_scores(self, best: nn.Module | None) -> dict[str, float]:
        """The best generator scored on the test split, which nothing selects on: the number to
        report. Latents and metric RNG are seeded apart from training and validation."""
        if best is None or self.test_scorer is None:
            return {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.train.seed + 3)
            z = torch.randn(self.test_scorer.n_samples, self.recipe.model.z_dim)
            return self.test_scorer(torch.cat([best(chunk) for chunk in z.split(GEN_CHUNK)]))

    def best_sampler(self) -> nn.Module | None:
        """The best-epoch generator as a CPU ``Sampler``, or None if no check ever ran."""
        if self.best_state is None:
            return None
        generator, _ = models.build(self.recipe, self.data.sample_shape)
        generator.load_state_dict(self.best_state["generator"])
        return models.Sampler(generator, self.data.kind == "image").eval()
