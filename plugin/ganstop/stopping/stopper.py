"""GAN-aware early stopping on a sample-quality metric.

A small state machine that the train loop, the Optuna objective, the replay and the tests drive
with plain numbers, and that a checkpoint restores through ``state_dict``. Each criterion is a
small class over the stopper's state (``criteria``, the shape of EarlyStopping.jl), and ``criteria`` +
``combine`` compose them. The default is the budget-aware ``forecast`` (``forecast``):
stop when the rest of the budget is unlikely to gain more than ``tolerance``. Beside it,
Keras/Lightning's ``patience`` (off unless set), Prechelt's (1998) GL/PQ/UP and a robust trend
rule; option names follow Keras/Lightning (``patience``, ``min_delta``, ``baseline``,
``warmup`` = Keras's ``start_from_epoch``) so users know them.

A GAN's quality metric is noisy from check to check, so ``min_delta_mode: se`` measures the
gain in standard errors of the metric (each check's ``<metric>_se``, from random halves of its
samples): a gain only counts when it is larger than the noise of the two values compared.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from ganstop.stopping.criteria import CRITERIA, StopReason, better

if TYPE_CHECKING:
    import numpy as np

    from ganstop.stopping.forecast import Fit

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

    The default rule is the budget-aware ``forecast`` (see ``Forecast``), which needs the budget
    ``max_epochs``; ``patience`` (None: off) is Keras's rule beside it, and whichever fires
    first stops the run, so a smaller patience never stops later.

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
    improvement at epoch e, wait at least until epoch ``patience_increase * e``.
    """

    mode: str = "min"
    criteria: tuple[str, ...] = ("forecast", "patience")
    combine: str = "any"
    max_epochs: int | None = None  # the budget the forecast forecasts to
    annealed_at: int | None = None  # forecast: silent before it, while the LR anneals (training.optim.annealed_epoch)
    tolerance: float = 0.05  # forecast: the share of the metric given up to save the rest of the budget
    confidence: float = 0.1  # forecast: stop once a gain beyond the tolerance is less likely than this
    forecast_window: float = 0.5  # forecast: fit the checks of this latest share of the epochs so far
    patience: int | None = None  # epochs without a min_delta gain; None: no patience rule
    patience_increase: float = 1.0  # patience: never stop before this many times the last improvement's epoch
    min_delta: float = 0.0
    min_delta_mode: str = "absolute"
    delta_reference: str = "improvement"
    warmup: int = 0
    baseline: float | None = None
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_finite: bool = True
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
    curve: list[tuple[int, float, float | None]] = field(default_factory=list, init=False)  # every finite check
    fits: Callable[[int], "Fit | None"] | None = field(default=None, init=False, repr=False)  # replay's cache, by len(curve)
    forecasts: Callable[[int], "np.ndarray | None"] | None = field(default=None, init=False, repr=False)  # likewise
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
        if (self.patience is not None and self.patience < 0) or self.min_delta < 0 or self.warmup < 0:
            raise ValueError("patience, min_delta and warmup must be >= 0")
        if self.patience_increase < 1:
            raise ValueError("patience_increase must be >= 1 (1: a fixed patience)")
        if self.window < 3 or self.strip < 1 or self.up_strips < 1 or self.gl_alpha <= 0 or self.pq_alpha <= 0:
            raise ValueError("window must be >= 3, strip and up_strips >= 1, gl_alpha and pq_alpha > 0")
        if not (0 <= self.tolerance < 1 and 0 < self.confidence < 1 and 0 < self.forecast_window <= 1):
            raise ValueError("tolerance must be in [0, 1), confidence in (0, 1), forecast_window in (0, 1]")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError("max_epochs must be >= 1")
        if self.baseline is not None:
            self._reference = (self.baseline, 0.0)
        self._since = self.warmup

    @classmethod
    def from_config(cls, config: object, mode: str, max_epochs: int | None = None,
                    annealed_at: int | None = None) -> "EarlyStopper":
        """The one place a stopper is built from a recipe's ``stopping`` section (trainer,
        search, replay, public API); ``max_epochs`` is the budget the forecast looks to, and
        ``annealed_at`` the epoch its LR schedule has annealed by (``training.optim.annealed_epoch``).
        ``min_delta: auto`` is AUTO_DELTA_SE standard errors."""
        names = {f.name for f in dataclasses.fields(cls) if f.init} - {"mode", "max_epochs", "annealed_at"}
        options = {name: getattr(config, name) for name in names if hasattr(config, name)}
        if options.get("min_delta") == "auto":
            options.update(min_delta=AUTO_DELTA_SE, min_delta_mode="se")
        return cls(mode=mode, max_epochs=max_epochs, annealed_at=annealed_at, **options)

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

    # ----- what the criteria read ----------------------------------------------------------
    def forecast_fit(self) -> "Fit | None":
        """The curve forecast at the latest check, fitted on every finite check (warm-up ones too:
        warm-up delays monitoring, not what the curve says); cached per curve by ``replay``."""
        if self.fits is not None:
            return self.fits(len(self.curve))
        from ganstop.stopping.forecast import fit  # numpy loads only where a forecast is asked for

        sign = 1.0 if self.mode == "min" else -1.0
        epochs = [c[0] for c in self.curve]
        values = [sign * c[1] for c in self.curve]
        return fit(epochs, values, self.max_epochs, self.forecast_window)

    def forecast(self) -> "np.ndarray | None":
        """The learned curve model's distribution of what the rest of the budget gains over the
        best (probabilities over ``curve_model.EDGES``) at the latest check, read off every finite
        check as ``forecast_fit`` is; None with too few checks. Cached per curve by ``replay``."""
        if self.forecasts is not None:
            return self.forecasts(len(self.curve))
        from ganstop.stopping.curve_model import forecast  # numpy loads only where a forecast is asked for

        sign = 1.0 if self.mode == "min" else -1.0
        return forecast([c[0] for c in self.curve], [sign * c[1] for c in self.curve], self.max_epochs)

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
        self.curve.append((epoch, value, se))
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
            rules = [CRITERIA[c] for c in self.criteria if CRITERIA[c].active(self)]
            fired = [rule.reason.value for rule in rules if rule.fires(self, improved)]
            if fired and (self.combine == "any" or len(fired) == len(rules)):
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

    def replay(self, checks: Iterable[tuple[int, float, float | None]], last_epoch: int,
               fits: Callable[[int], "Fit | None"] | None = None,
               forecasts: Callable[[int], "np.ndarray | None"] | None = None) -> "EarlyStopper":
        """Run over recorded ``(epoch, value, se)`` checks as training would have and return
        self, with ``stopped_epoch`` and ``best_epoch`` set; the curve ends at ``last_epoch``
        (stopped there by ``max_epochs`` when nothing fired). ``fits(n)``, where given, is the
        forecast after the first n finite checks, ``forecasts(n)`` the curve model's (``replay``
        caches both per curve)."""
        self.fits, self.forecasts = fits, forecasts
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
            "curve": [list(c) for c in self.curve],  # the monitored checks are those past the warm-up
            "stop_reason": self.stop_reason,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        reference = state["reference"]
        self._reference = (reference, None) if isinstance(reference, float) else tuple(reference) if reference else None
        # checkpoints from before the forecast hold the monitored checks only, and those of 0.1 none
        self.curve = [tuple(c) for c in state.get("curve", state.get("checks", []))]
        self.checks = [c for c in self.curve if c[0] > self.warmup]
        self._since = state.get("since", self.checks[-1][0] - self.wait if self.checks else self.warmup)
        self.stop_reason, self.stopped_epoch = state["stop_reason"], state["stopped_epoch"]
