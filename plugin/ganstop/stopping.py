"""GAN-aware early stopping on a sample-quality metric.

Pure Python on purpose: the stopper is a small state machine that the train loop, the
Optuna objective, the benchmark's replay and the tests drive with plain numbers, and that a
checkpoint restores through ``state_dict``. Option names follow Keras/Lightning (``patience``,
``min_delta``, ``baseline``, ``warmup`` = Keras's ``start_from_epoch``) so users know them;
the extra criteria are Prechelt's (1998) and a robust trend rule.

A GAN's quality metric is noisy from check to check, so ``min_delta_mode: se`` measures the
gain in standard errors of the metric (each check's ``<metric>_se``, from random halves of its samples): a gain only
counts when it is larger than the noise of the two values compared.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable


def better(a: float, b: float, mode: str) -> bool:
    """Whether ``a`` is strictly better than ``b`` for a metric whose direction is ``mode``."""
    return a < b if mode == "min" else a > b


class StopReason(str, Enum):
    PATIENCE_EXHAUSTED = "patience_exhausted"
    TREND_FLAT = "trend_flat"
    GENERALIZATION_LOSS = "generalization_loss"
    PROGRESS_QUOTIENT = "progress_quotient"
    SUCCESSIVE_WORSENING = "successive_worsening"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"
    NON_FINITE_METRIC = "non_finite_metric"
    NON_FINITE_LOSS = "non_finite_loss"
    MAX_EPOCHS = "max_epochs"


CRITERIA = {  # recipe name -> the reason a stop by it is logged under
    "patience": StopReason.PATIENCE_EXHAUSTED,  # Keras: `patience` epochs without a min_delta gain (x patience_increase)
    "trend": StopReason.TREND_FLAT,  # Theil-Sen slope projects less than min_delta over `patience` epochs
    "gl": StopReason.GENERALIZATION_LOSS,  # Prechelt GL_alpha: % worse than the best
    "pq": StopReason.PROGRESS_QUOTIENT,  # Prechelt PQ_alpha: GL over the strip's progress
    "up": StopReason.SUCCESSIVE_WORSENING,  # Prechelt UP_s: worse at the end of s successive strips
}
AUTO_DELTA_SE = 1.0  # `min_delta: auto`: a gain counts when above the standard error of the difference
DELTA_MODES = ("absolute", "relative", "se")
DELTA_REFERENCES = ("improvement", "best")


@dataclass(frozen=True)
class Check:
    """What one validation check decided."""

    is_best: bool  # strictly better than every monitored value so far: checkpoint this epoch
    improved: bool  # better than the reference by more than min_delta: patience resets
    stop: str | None  # a StopReason value, or several joined by '+' when `combine: all` fired


@dataclass
class EarlyStopper:
    """Decides when to stop from the monitored metric; every length is counted in epochs.

    Checks need not come every epoch (``metrics.every``, or a time budget that spaces them by
    what validation costs on this hardware), so ``patience``, ``window`` and ``strip`` are
    epochs, as Keras counts patience: the same recipe stops at the same epoch on a laptop and
    on a GPU. With a check every epoch this is exactly Lightning's count of checks.

    ``best_epoch`` follows every strict improvement (the exact best epoch is what gets
    restored), while patience only resets on a gain larger than ``min_delta`` over the
    *reference*: the value at the last such gain (``delta_reference: improvement``, Keras and
    Lightning), or the best value so far (``best``: every small gain moves the bar, Ignite's
    ``cumulative_delta=False``). Checks at epochs ``<= warmup`` are not monitored (Keras's
    ``start_from_epoch``); only a non-finite value stops the run there.

    ``patience_increase`` is the deeplearning.net tutorial's rule (Bengio 2012): after an
    improvement at epoch e, wait at least until epoch ``patience_increase * e``. A GAN's quality
    plateaus grow with training age (gains come at roughly even steps of log-epochs), so a fixed
    patience that suits epoch 30 stops a run at epoch 90 in the middle of a plateau.
    """

    mode: str = "min"
    patience: int = 10
    patience_increase: float = 1.0  # patience: never stop before this many times the last improvement's epoch
    min_delta: float = 0.0
    min_delta_mode: str = "absolute"
    delta_reference: str = "improvement"
    warmup: int = 0
    baseline: float | None = None
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_finite: bool = True
    criteria: tuple[str, ...] = ("patience",)
    combine: str = "any"
    window: int = 10  # trend: the slope is fitted on the checks of the last `window` epochs
    strip: int = 5  # pq and up: Prechelt's strip length k, in epochs
    gl_alpha: float = 5.0  # gl: stop when more than this many percent worse than the best
    pq_alpha: float = 0.75  # pq: stop when GL / progress exceeds this
    up_strips: int = 3  # up: s, the successive strips that must each end worse

    best: float | None = field(default=None, init=False)
    best_epoch: int | None = field(default=None, init=False)
    wait: int = field(default=0, init=False)  # epochs since the last improvement (or warm-up's end)
    stop_reason: str | None = field(default=None, init=False)
    stopped_epoch: int | None = field(default=None, init=False)
    checks: list[tuple[int, float, float | None]] = field(default_factory=list, init=False)  # monitored
    _reference: tuple[float, float | None] | None = field(default=None, init=False)  # value, its se
    _since: int = field(default=0, init=False)  # epoch of the last improvement; warm-up's end before one

    def __post_init__(self) -> None:
        self.criteria = tuple(self.criteria)
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {self.mode!r}")
        if self.min_delta_mode not in DELTA_MODES:
            raise ValueError(f"min_delta_mode must be one of {', '.join(DELTA_MODES)}, not {self.min_delta_mode!r}")
        if self.delta_reference not in DELTA_REFERENCES:
            raise ValueError(f"delta_reference must be one of {', '.join(DELTA_REFERENCES)}, not {self.delta_reference!r}")
        if not self.criteria or set(self.criteria) - set(CRITERIA):
            raise ValueError(f"criteria must be a non-empty list of {', '.join(CRITERIA)}, not {list(self.criteria)}")
        if self.combine not in ("any", "all"):
            raise ValueError(f"combine must be 'any' or 'all', not {self.combine!r}")
        if self.patience < 0 or self.min_delta < 0 or self.warmup < 0:
            raise ValueError("patience, min_delta and warmup must be >= 0")
        if self.patience_increase < 1:
            raise ValueError("patience_increase must be >= 1 (1: a fixed patience)")
        if self.window < 3 or self.strip < 1 or self.up_strips < 1 or self.gl_alpha <= 0 or self.pq_alpha <= 0:
            raise ValueError("window must be >= 3, strip and up_strips >= 1, gl_alpha and pq_alpha > 0")
        if self.baseline is not None:
            self._reference = (self.baseline, 0.0)
        self._since = self.warmup

    @classmethod
    def from_config(cls, config: object, mode: str) -> "EarlyStopper":
        """The one place a stopper is built from a recipe's ``stopping`` section (trainer,
        search, benchmark). ``min_delta: auto`` is AUTO_DELTA_SE standard errors."""
        names = {f.name for f in dataclasses.fields(cls) if f.init} - {"mode"}
        options = {name: getattr(config, name) for name in names if hasattr(config, name)}
        if options.get("min_delta") == "auto":
            options.update(min_delta=AUTO_DELTA_SE, min_delta_mode="se")
        return cls(mode=mode, **options)

    # ----- comparisons ---------------------------------------------------------------------
    def _better(self, a: float, b: float) -> bool:
        return better(a, b, self.mode)

    def _gain(self, value: float, reference: float) -> float:
        """How much better ``value`` is than ``reference`` (negative when worse)."""
        return reference - value if self.mode == "min" else value - reference

    def _delta(self, reference: float, se: float | None, reference_se: float | None) -> float:
        """The gain over ``reference`` that counts as an improvement."""
        if self.min_delta_mode == "relative":
            return self.min_delta * abs(reference)
        if self.min_delta_mode == "se":
            if se is None or not math.isfinite(se):
                raise ValueError("min_delta_mode=se needs the monitored metric's standard error at every check")
            return self.min_delta * math.hypot(se, reference_se or 0.0)
        return self.min_delta

    def _improves(self, value: float, se: float | None) -> bool:
        if self._reference is None:
            return True
        reference, reference_se = self._reference
        return self._gain(value, reference) > self._delta(reference, se, reference_se)

    # ----- the criteria: each says, at the latest check, whether it wants to stop ----------
    def _fires(self, criterion: str, improved: bool) -> bool:
        epoch, value, _ = self.checks[-1]
        if criterion == "patience":
            return not improved and self.wait >= self.patience and not self._increase_waits(epoch)
        if criterion == "trend":
            return self._trend_flat()
        if criterion == "gl":
            return self._generalization_loss(value) > self.gl_alpha
        if criterion == "pq":  # progress over the strip before this check, which it must not inflate
            if self.checks[0][0] > epoch - self.strip:
                return False
            strip = [v for e, v, _ in self.checks[:-1] if e >= epoch - self.strip] or [self.checks[-2][1]]
            gl, progress = self._generalization_loss(value), self._progress(strip)
            return gl > 0 and (progress == 0 or gl / progress > self.pq_alpha)
        # up: the values at the ends of the last up_strips strips each got worse
        ends = [self._value_at(epoch - i * self.strip) for i in range(self.up_strips + 1)]
        return None not in ends and all(self._gain(a, b) < 0 for a, b in zip(ends, ends[1:]))

    def _increase_waits(self, epoch: int) -> bool:
        """``patience_increase``: the last improvement (none yet: no extra wait, as with an unbeaten
        baseline) was too recent for a stop; the tolerance keeps 1.1 x 50 at epoch 55."""
        return self._since > self.warmup and epoch < self.patience_increase * self._since - 1e-9

    def _value_at(self, epoch: int) -> float | None:
        """The value of the latest check at or before ``epoch``: where a strip ended when checks
        are spaced; None before the first monitored check."""
        return next((v for e, v, _ in reversed(self.checks) if e <= epoch), None)

    def _generalization_loss(self, value: float) -> float:
        """Prechelt's GL: percent worse than the best, for either direction of the metric."""
        return 100 * max(0.0, -self._gain(value, self.best)) / max(abs(self.best), 1e-12)

    def _progress(self, strip: list[float]) -> float:
        """Prechelt's P_k, read off the monitored metric: GAN losses hover at an equilibrium and
        say nothing about progress, so how far the strip's mean sits from its best stands in."""
        best = min(strip) if self.mode == "min" else max(strip)
        return 1000 * abs(statistics.fmean(strip) - best) / max(abs(best), 1e-12)

    def _trend_flat(self) -> bool:
        """Theil-Sen slope over the checks of the last ``window`` epochs (at least 3 checks),
        projected over ``patience`` more epochs."""
        last = self.checks[-1][0]
        if self.checks[0][0] > last - self.window + 1 or len(self.checks) < 3:
            return False
        from scipy.stats import theilslopes  # the stopper stays importable without scipy's load time

        recent = [c for c in self.checks if c[0] > last - self.window]
        recent = recent if len(recent) >= 3 else self.checks[-3:]
        slope = theilslopes([c[1] for c in recent], [c[0] for c in recent]).slope
        horizon = max(self.patience, 1)
        projected = -slope * horizon if self.mode == "min" else slope * horizon
        se = recent[-1][2]
        return projected <= self._delta(self.best, se, se)

    # ----- the state machine ---------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def _halt(self, epoch: int, reason: str) -> str:
        self.stop_reason, self.stopped_epoch = StopReason(reason).value if "+" not in reason else reason, epoch
        return self.stop_reason

    def update(self, epoch: int, value: float, se: float | None = None) -> Check:
        """Feed the monitored value of one validation check (epochs count from 1) and, for
        ``min_delta_mode: se``, its standard error."""
        if self.stopped:
            raise RuntimeError("the stopper already stopped; load_state_dict() to reuse it")
        if not math.isfinite(value):
            reason = self._halt(epoch, StopReason.NON_FINITE_METRIC) if self.check_finite else None
            return Check(is_best=False, improved=False, stop=reason)
        if epoch <= self.warmup:
            return Check(is_best=False, improved=False, stop=None)

        self.checks.append((epoch, value, se))
        is_best = self.best is None or self._better(value, self.best)
        if is_best:
            self.best, self.best_epoch = value, epoch
        improved = self._improves(value, se)
        moves = self.delta_reference == "best" and (self._reference is None or self._better(value, self._reference[0]))
        if improved or moves:
            self._reference = (value, se)
        if improved:
            self._since = epoch
        self.wait = epoch - self._since

        stop = None
        if self.stopping_threshold is not None and not self._better(self.stopping_threshold, value):
            stop = StopReason.STOPPING_THRESHOLD.value
        elif self.divergence_threshold is not None and self._better(self.divergence_threshold, value):
            stop = StopReason.DIVERGENCE_THRESHOLD.value
        else:
            fired = [CRITERIA[c].value for c in self.criteria if self._fires(c, improved)]
            if fired and (self.combine == "any" or len(fired) == len(self.criteria)):
                stop = "+".join(fired)
        return Check(is_best, improved, self._halt(epoch, stop) if stop else None)

    def update_losses(self, epoch: int, losses: dict[str, float]) -> str | None:
        """Stop on a NaN/inf training loss: the weights are gone, waiting cannot help."""
        if self.check_finite and not all(math.isfinite(v) for v in losses.values()):
            return self._halt(epoch, StopReason.NON_FINITE_LOSS)
        return None

    def exhaust(self, epoch: int) -> str:
        """The epoch budget ran out before any criterion fired."""
        return self._halt(epoch, StopReason.MAX_EPOCHS)

    def replay(self, checks: Iterable[tuple[int, float, float | None]], last_epoch: int) -> "EarlyStopper":
        """Run over recorded ``(epoch, value, se)`` checks as training would have; the budget
        ends at ``last_epoch``. The benchmark scores policies on cached curves with this."""
        for epoch, value, se in checks:
            if self.update(epoch, value, se).stop:
                return self
        self.exhaust(last_epoch)
        return self

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "since": self._since,
            "reference": list(self._reference) if self._reference else None,
            "checks": [list(c) for c in self.checks],
            "stop_reason": self.stop_reason,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        reference = state["reference"]
        self._reference = (reference, None) if isinstance(reference, float) else tuple(reference) if reference else None
        self.checks = [tuple(c) for c in state.get("checks", [])]  # absent in checkpoints of ganstop 0.1
        self._since = state.get("since", self.checks[-1][0] - self.wait if self.checks else self.warmup)
        self.stop_reason, self.stopped_epoch = state["stop_reason"], state["stopped_epoch"]
