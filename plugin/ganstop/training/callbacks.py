"""The loop's callbacks, in the shape of Lightning's: hooks the loop calls, each part with its own
``state_dict`` that rides in the checkpoint. ``Validation`` scores held-out samples and asks the
stopper; ``Checkpointing`` writes the resumable state on a clock. Tracking
(``tracking.logger.MlflowLogger``) and pruning (``study.objective.OptunaPruning``) are callbacks
too, kept out of this module: the loop knows neither MLflow nor Optuna, and a callback that
raises (a pruner, say) ends training with that exception.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ganstop.training import distributed
from ganstop.training.checkpoint import load_first_readable
from ganstop.paths import save_atomic
from ganstop.metrics.registry import resolve
from ganstop.metrics.scorer import Scorer
from ganstop.training.optim import annealed_epoch
from ganstop.recipe import Recipe
from ganstop.stopping.stopper import Check, EarlyStopper

if TYPE_CHECKING:
    from ganstop.training.loop import Trainer, TrainResult


class Callback:
    """Hooks the loop calls; every method is optional. Validation samples, when the check is
    one that draws a picture (``metrics.grid_every``, a new best, the last check): up to
    metrics.grid_size images, or every generated point for 2D data; None otherwise."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_validation_end(self, epoch: int, metrics: dict[str, float], samples: torch.Tensor | None,
                          check: Check) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, result: TrainResult) -> None: ...

    @property
    def state_key(self) -> str:
        """Where this callback's state sits in a checkpoint; two of a kind need keys of their own."""
        return type(self).__qualname__

    def state_dict(self) -> dict:
        """What this callback needs to carry on after a resume; empty: nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class Validation(Callback):
    """Validation plus stopping: samples from fixed latents, scored on held-out data; the
    stopper's word on the monitored metric; the best generator kept in memory on every new best
    (``Checkpointing`` writes it with the next full checkpoint).

    In a data-parallel run each rank generates its share of the latents, the samples are
    gathered without the padding duplicates, rank 0 (the only one with a ``scorer``) scores them
    once and every rank gets its metrics, so every rank's stopper takes the same decision."""

    def __init__(self, recipe: Recipe, scorer: Scorer | None, device: torch.device, n_samples: int):
        self.recipe, self.scorer = recipe, scorer
        selection = resolve(recipe)
        self.monitor, self.mode = selection.monitor, selection.mode
        self.stopper = EarlyStopper.from_config(recipe.stopping, self.mode, max_epochs=recipe.train.max_epochs,
                                                annealed_at=annealed_epoch(recipe.decay, recipe.train.max_epochs))
        gen = torch.Generator().manual_seed(recipe.train.seed + 1)
        self.z = torch.randn(n_samples, recipe.model.z_dim, generator=gen).to(device)
        self.best_state: dict | None = None  # {"epoch", "value", "generator": CPU state dict}
        self.best_written = True

    def state_dict(self) -> dict:
        # the best rides along, so best.pt always matches the stopper on resume
        return {"stopper": self.stopper.state_dict(), "best": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.stopper.load_state_dict(state["stopper"])
        self.best_state = state["best"]

    def validate(self, trainer: Trainer, last: bool) -> tuple[dict[str, float], torch.Tensor | None, Check]:
        """Score this epoch's generator, update the stopper and the best, pick the samples to draw."""
        device = trainer.step.device
        trainer.step.sync_buffers()
        # Validation must not move the training RNG: the trajectory is then the same whatever
        # the validation schedule, and a resumed run replays the uninterrupted one.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.recipe.train.seed + 2)
            z = self.z if distributed.world_size() == 1 else self.z[distributed.shard(len(self.z)).to(device)]
            samples = distributed.gather(trainer.step.generate(z), len(self.z))
            metrics = self.scorer(samples) if self.scorer is not None else None
        metrics = distributed.broadcast(metrics)
        epoch = trainer.epoch
        check = self.stopper.update(epoch, metrics[self.monitor], metrics.get(f"{self.monitor}_se"))
        if check.is_best and distributed.is_main():  # the best generator is kept once
            weights = trainer.step.eval_generator().state_dict()
            self.best_state = {"epoch": epoch, "value": metrics[self.monitor],
                               "generator": {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}}
            self.best_written = False
        n = 1 + sum(self.monitor in h for h in trainer.history)  # this check's number (not in the history yet)
        drawn = check.is_best or last or check.stop or n == 1 or n % self.recipe.metrics.grid_every == 0
        if not drawn:
            return metrics, None, check
        shown = samples[: self.recipe.metrics.grid_size] if trainer.data.kind == "image" else samples  # a scatter wants all
        return metrics, shown.cpu(), check


class Checkpointing(Callback):
    """The full resumable state as ``last.pt`` (the one before kept as ``last.pt.prev``) at most
    every ``train.checkpoint_seconds``, and at the end; ``best.pt`` written with it when the best
    changed, so a crash loses at most one interval and best.pt always matches last.pt."""

    def __init__(self, folder: Path, seconds: float):
        self.folder, self.seconds = Path(folder), seconds
        self.folder.mkdir(parents=True, exist_ok=True)
        self.trainer: Trainer | None = None
        self._saved_at = time.monotonic()

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def on_train_start(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        trainer = self.trainer
        if not trainer.should_stop and epoch < trainer.recipe.train.max_epochs and self.due():
            self.save(trainer)

    def due(self) -> bool:
        return time.monotonic() - self._saved_at >= self.seconds

    def save(self, trainer: Trainer) -> None:
        """Rank 0 writes; the other ranks hold the same state and write nothing."""
        if not distributed.is_main():
            return
        validation = trainer.validation
        if not validation.best_written and validation.best_state is not None:
            save_atomic(validation.best_state, self.best_path)
            validation.best_written = True
        save_atomic(trainer.state_dict(), self.last_path, keep_previous=True)
        self._saved_at = time.monotonic()

    def restore(self, trainer: Trainer) -> bool:
        """Load the newest readable full checkpoint into the trainer; False when there is none.
        Rank 0 reads it and every rank gets its copy: the other ranks may be other machines."""
        state = None
        if distributed.is_main():
            state = load_first_readable([self.last_path, self.last_path.with_name("last.pt.prev")])
        state = distributed.broadcast(state)
        if state is None:
            return False
        trainer.load_state_dict(state)
        if trainer.validation.best_state is not None and distributed.is_main():
            save_atomic(trainer.validation.best_state, self.best_path)
        return True
