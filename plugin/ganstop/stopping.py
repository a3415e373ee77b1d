"""GAN-aware early stopping on a sample-quality metric.

Pure Python on purpose: the stopper is a small state machine that the train loop, the
Optuna objective and the tests drive with plain numbers, and that a checkpoint restores
through ``state_dict``. Option names follow Lightning/Keras/Ignite so users know them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum


class StopReason(str, Enum):
    PATIENCE_EXHAUSTED = "patience_exhausted"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"
    NON_FINITE_METRIC = "non_finite_metric"
    NON_FINITE_LOSS = "non_finite_loss"
    MAX_EPOCHS = "max_epochs"


@dataclass(frozen=True)
class Check:
    """What one validation check decided."""

    is_best: bool  # strictly better than every earlier value: checkpoint this epoch
    improved: bool  # better by more than min_delta: patience resets
    stop: StopReason | None


@dataclass
class EarlyStopper:
    """Decides when to stop from the monitored metric, counted in validation checks.

    ``best_epoch`` follows every strict improvement (the exact best epoch is what gets
    restored), while patience only resets on an improvement larger than ``min_delta``.
    With ``cumulative_delta`` the reference for that delta stays put until it is beaten
    by ``min_delta`` (Ignite), so slow creeping gains eventually count; without it the
    reference follows the best value. Before ``warmup`` epochs only non-finite values stop.
    """

    mode: str = "min"
    patience: int = 10
    min_delta: float = 0.0
    min_delta_mode: str = "absolute"
    warmup: int = 0
    baseline: float | None = None
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_finite: bool = True
    cumulative_delta: bool = False

    best: float | None = field(default=None, init=False)
    best_epoch: int | None = field(default=None, init=False)
    wait: int = field(default=0, init=False)
    stop_reason: StopReason | None = field(default=None, init=False)
    stopped_epoch: int | None = field(default=None, init=False)
    _reference: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {self.mode!r}")
        if self.min_delta_mode not in ("absolute", "relative"):
            raise ValueError(f"min_delta_mode must be 'absolute' or 'relative', not {self.min_delta_mode!r}")
        if self.patience < 0 or self.min_delta < 0 or self.warmup < 0:
            raise ValueError("patience, min_delta and warmup must be >= 0")
        self._reference = self.baseline

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _beats_by_delta(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        delta = self.min_delta * abs(reference) if self.min_delta_mode == "relative" else self.min_delta
        return self._better(value, reference - delta if self.mode == "min" else reference + delta)

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def _halt(self, epoch: int, reason: StopReason) -> StopReason:
        self.stop_reason, self.stopped_epoch = reason, epoch
        return reason

    def update(self, epoch: int, value: float) -> Check:
        """Feed the monitored value of one validation check (epochs count from 1)."""
        if self.stopped:
            raise RuntimeError("the stopper already stopped; load_state_dict() to reuse it")
        if not math.isfinite(value):
            reason = self._halt(epoch, StopReason.NON_FINITE_METRIC) if self.check_finite else None
            return Check(is_best=False, improved=False, stop=reason)

        is_best = self.best is None or self._better(value, self.best)
        if is_best:
            self.best, self.best_epoch = value, epoch
        improved = self._beats_by_delta(value, self._reference)
        if improved or (not self.cumulative_delta and self._better(value, self._reference)):
            self._reference = value  # without cumulative_delta, small gains move the bar too

        if epoch < self.warmup:
            self.wait = 0  # patience starts counting once the warm-up is over
            return Check(is_best, improved, None)
        self.wait = 0 if improved else self.wait + 1
        stop = None
        if self.stopping_threshold is not None and not self._better(self.stopping_threshold, value):
            stop = StopReason.STOPPING_THRESHOLD
        elif self.divergence_threshold is not None and self._better(self.divergence_threshold, value):
            stop = StopReason.DIVERGENCE_THRESHOLD
        elif not improved and self.wait >= self.patience:
            stop = StopReason.PATIENCE_EXHAUSTED
        return Check(is_best, improved, self._halt(epoch, stop) if stop else None)

    def update_losses(self, epoch: int, losses: dict[str, float]) -> StopReason | None:
        """Stop on a NaN/inf training loss: the weights are gone, waiting cannot help."""
        if self.check_finite and not all(math.isfinite(v) for v in losses.values()):
            return self._halt(epoch, StopReason.NON_FINITE_LOSS)
        return None

    def exhaust(self, epoch: int) -> StopReason:
        """The epoch budget ran out before any criterion fired."""
        return self._halt(epoch, StopReason.MAX_EPOCHS)

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "reference": self._reference,
            "stop_reason": self.stop_reason.value if self.stop_reason else None,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self._reference = state["reference"]
        self.stop_reason = StopReason(state["stop_reason"]) if state["stop_reason"] else None
        self.stopped_epoch = state["stopped_epoch"]
