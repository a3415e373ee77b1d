"""The training loop, in the shape of Lightning's: epochs of the GAN step (``gan_step``), checks
on the budget's schedule, and the callbacks (``callbacks``) that validate and stop, checkpoint,
track and prune. It knows neither MLflow nor Optuna: they come in as callbacks.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ganstop.training import distributed, interrupt
from ganstop.training.cadence import CheckSchedule
from ganstop.training.callbacks import Callback, Checkpointing, Validation
from ganstop.data.sets import Data
from ganstop.errors import RecipeError
from ganstop.training.gan_step import GEN_CHUNK, GANStep
from ganstop.metrics.scorer import Scorer
from ganstop.recipe import Recipe
from ganstop.stopping.stopper import EarlyStopper


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
    max_check_gap: int = 0  # the most epochs from one check to the next (from the start to the first)
    cadence_warning: str | None = None  # set when metrics.max_gap, not metrics.budget, had to call checks


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
    """One GAN training run over a recipe: the loop over its parts. ``fit()`` runs it,
    ``resume()`` continues from the newest checkpoint, ``state_dict()`` is what a checkpoint holds."""

    def __init__(self, recipe: Recipe, data: Data, scorer: Scorer | None, checkpoint_dir: Path,
                 callbacks: list[Callback] = (), device: torch.device | None = None, progress: bool = True,
                 test_scorer: Scorer | None = None):
        self.recipe, self.data, self.test_scorer, self.progress = recipe, data, test_scorer, progress
        self.device = device or resolve_device(recipe.train.device)
        self.step = GANStep(recipe, data, self.device)
        self.validation = Validation(recipe, scorer, self.device, recipe.metrics.n_samples or len(data.val))
        self.checkpointing = Checkpointing(checkpoint_dir, recipe.train.checkpoint_seconds)
        self.callbacks = list(callbacks)  # the user's (tracking, pruning, ...)
        self.monitor, self.mode = self.validation.monitor, self.validation.mode
        metrics = recipe.metrics
        self.schedule = CheckSchedule(metrics.budget, metrics.max_gap, recipe.train.max_epochs, metrics.every)
        self.clock = time.perf_counter  # what the loop times itself with (tests inject their own)
        self._open: tuple[int, float, float, bool] | None = None  # (epoch, train, since, checked) in its callbacks
        self.epoch, self.should_stop = 0, False
        self.history: list[dict[str, float]] = []

    @property
    def stopper(self) -> EarlyStopper:
        return self.validation.stopper

    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpointing.folder

    def state_dict(self) -> dict:
        """The loop's position, the step, every callback's state (by ``state_key``, as Lightning
        keeps them) and the RNGs: all a resumed run needs to replay the uninterrupted one."""
        return {"epoch": self.epoch, "history": self.history, "schedule": self._schedule_state(),
                "step": self.step.state_dict(),
                "callbacks": {cb.state_key: state for cb in self._parts() if (state := cb.state_dict())},
                "rng_cpu": torch.get_rng_state(),
                # this process's GPU alone: every rank draws the same stream, so rank 0's state is
                # every rank's, and a machine with another number of GPUs can resume it
                "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def _schedule_state(self) -> dict:
        """The schedule's account as if the epoch in its callbacks ended now: a checkpoint written
        from them holds the epoch's training and check, and a resumed run the same schedule."""
        if self._open is None:
            return self.schedule.state_dict()
        epoch, train, since, checked = self._open
        schedule = copy.deepcopy(self.schedule)
        schedule.spent(epoch, train, self.clock() - since, checked)
        return schedule.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.history = state["epoch"], state["history"]
        self.schedule.load_state_dict(state["schedule"])
        self.step.load_state_dict(state["step"])
        for callback in self._parts():
            if callback.state_key in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][callback.state_key])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and isinstance(state["rng_cuda"], torch.Tensor):  # a CPU run's has none
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def resume(self) -> bool:
        """Continue from the newest readable full checkpoint; False when starting fresh."""
        return self.checkpointing.restore(self)

    def _parts(self) -> list[Callback]:
        """Validation first (the others see its verdict), checkpointing last (its state then
        holds every callback's work on the epoch it saves), as Lightning orders ModelCheckpoint."""
        return [self.validation, *self.callbacks, self.checkpointing]

    def _emit(self, hook: str, *args) -> None:
        for callback in self._parts():
            getattr(callback, hook)(*args)

    def fit(self) -> TrainResult:
        """Train to the end of the budget or the stopper's word. Per epoch: the GAN step, then a
        check when the schedule says so, then the callbacks (a full checkpoint when
        ``train.checkpoint_seconds`` have passed); a last checkpoint at the end. Everything but
        the step is timed into the schedule. In one process a Ctrl-C stops the run at the next
        batch boundary (``interrupt``), never inside a callback's write."""
        with interrupt.held() if distributed.world_size() == 1 else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> TrainResult:
        last_epoch, clock = self.recipe.train.max_epochs, self.clock
        started = clock()
        self._emit("on_train_start", self)
        self.schedule.started(clock() - started)  # params, recipe: a one-off
        first = self.epoch + 1 if not self.stopper.stopped else last_epoch + 1  # resuming a finished run
        bar = tqdm(range(first, last_epoch + 1), initial=self.epoch, total=last_epoch, desc="epochs",
                   unit="epoch", disable=not (self.progress and distributed.is_main()), dynamic_ncols=True)
        for epoch in bar:
            interrupt.check()
            self.epoch = epoch
            t0 = clock()
            logs = self.step.train_epoch(epoch)
            trained = clock()
            logs["epoch_seconds"] = trained - t0
            logs["samples_per_second"] = logs.pop("samples") / (trained - t0)
            stop = self.stopper.update_losses(epoch, {"d_loss": logs["d_loss"], "g_loss": logs["g_loss"]})
            # rank 0's clock decides for every rank: each must join the same checks
            checked = stop is None and distributed.agree(self.schedule.due(epoch, trained - t0), self.device)
            if checked and self.schedule.late_since == epoch and distributed.is_main():
                warnings.warn(f"ganstop: {self.schedule.late_message()}", stacklevel=3)
            if checked:
                metrics, samples, check = self.validation.validate(self, last=epoch == last_epoch)
                logs.update(metrics)
                logs["validation_seconds"] = clock() - trained
                stop = check.stop
                self._emit("on_validation_end", epoch, metrics, samples, check)
                best = self.stopper.best
                bar.set_postfix({self.monitor: f"{metrics[self.monitor]:.4g}",
                                 "best": "-" if best is None else f"{best:.4g}@{self.stopper.best_epoch}"})
            self.history.append({"epoch": epoch, **logs})
            self.should_stop = stop is not None
            self._open = (epoch, trained - t0, trained, checked)
            try:
                self._emit("on_epoch_end", epoch, logs)
            except BaseException:  # a pruner, a lost tracking server: the other ranks stop with this one
                distributed.any_rank(True, self.device)
                raise
            self.should_stop = distributed.any_rank(self.should_stop, self.device)
            self.schedule.spent(epoch, trained - t0, clock() - trained, checked)
            self._open = None
            if self.should_stop:
                break
        bar.close()
        if not self.stopper.stopped:
            self.stopper.exhaust(self.epoch)
        self.checkpointing.save(self)
        best = self.best_sampler()
        late = None if self.schedule.late_since is None else self.schedule.late_message()
        result = TrainResult(self.monitor, self.mode, self.stopper.stop_reason, self.stopper.stopped_epoch,
                             self.stopper.best_epoch, self.stopper.best, best, self.history,
                             clock() - started, self.schedule.share(), self._test_scores(best),
                             self.max_check_gap(), late)
        self._emit("on_train_end", result)
        return result

    def max_check_gap(self) -> int:
        """The most epochs the stopper went without a check, the run's start counted as epoch 0."""
        checked = [0] + [h["epoch"] for h in self.history if self.monitor in h]
        return max((b - a for a, b in zip(checked, checked[1:])), default=0)

    @torch.no_grad()
    def _test_scores(self, best: nn.Module | None) -> dict[str, float]:
        """The best generator scored on the test split, which nothing selects on: the number to
        report. Latents and metric RNG are seeded apart from training and validation."""
        if best is None or self.test_scorer is None:
            return {}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.recipe.train.seed + 3)  # which seeds the GPU too: its state is forked as well
            z = torch.randn(self.test_scorer.n_samples, self.recipe.model.z_dim)
            return self.test_scorer(torch.cat([best(chunk) for chunk in z.split(GEN_CHUNK)]))

    def best_sampler(self) -> nn.Module | None:
        """The best-epoch generator as a CPU ``Sampler``, or None if no check ever ran."""
        best = self.validation.best_state
        return None if best is None else self.step.sampler(best["generator"])
