"""The stopping criteria: each a small rule over the stopper's state (the shape of
EarlyStopping.jl), with the reasons a run stops. ``EarlyStopper`` composes them."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ganstop.stopping.stopper import EarlyStopper


def epoch_of(check: tuple[int, float, float | None]) -> int:
    return check[0]


def better(a: float, b: float, mode: str) -> bool:
    """Whether ``a`` is strictly better than ``b`` for a metric whose direction is ``mode``."""
    return a < b if mode == "min" else a > b


class StopReason(str, Enum):
    FORECAST_NO_GAIN = "forecast_no_gain"
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


# ----- the criteria: each a small rule over the stopper's state (EarlyStopping.jl's shape) ------
class Criterion:
    """One stopping rule: ``fires(s, improved)`` says whether it wants to stop at the stopper's
    latest check. ``active(s)`` is False for a rule switched off by its options."""

    reason: StopReason

    def active(self, s: "EarlyStopper") -> bool:
        return True

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        raise NotImplementedError


class Forecast(Criterion):
    """Budget-aware: P(the rest of the budget beats the best by more than ``tolerance`` x |best|)
    fell below ``confidence``, by the curve ensemble of ``forecast`` and by the learned curve
    model alike. A curve that turned (its checks since the best sit well above it:
    ``Fit.turned``) stops at once. The ensemble fits this curve's own recent checks and cannot
    know that GAN curves sit on a plateau, or first rise, and then fall by a third; the model,
    trained on such curves, can: it holds a plateau the fit calls done.
    Needs ``max_epochs``: without a budget there is nothing to forecast to, and it never fires.
    With an LR that anneals to the budget it is silent, turns included, before ``annealed_at``:
    the curve so far was drawn at a higher LR than the end will be (a ring run's plateau at half
    its budget fell by half as its cosine LR came down)."""

    reason = StopReason.FORECAST_NO_GAIN

    def active(self, s: "EarlyStopper") -> bool:
        return s.max_epochs is not None

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        if s.annealed_at is not None and s.checks[-1][0] < s.annealed_at:
            return False
        return self.decides(s)

    def decides(self, s: "EarlyStopper") -> bool:
        """Whether the forecast says stop, once the LR has annealed."""
        fit = s.forecast_fit()
        if fit is None:
            return False
        from ganstop.stopping.curve_model import exceeds
        from ganstop.stopping.forecast import TURN_SHARE

        sign, epoch = (1.0 if s.mode == "min" else -1.0), s.checks[-1][0]
        # the checks after the best in the latest TURN_SHARE of the epochs, at least 3 of them
        after_best = bisect_right(s.checks, s.best_epoch, key=epoch_of)
        latest = bisect_left(s.checks, (1 - TURN_SHARE) * epoch, key=epoch_of)
        recent = s.checks[max(after_best, min(latest, len(s.checks) - 3)):]
        if fit.turned([sign * v for _, v, _ in recent], sign * s.best, s.tolerance, sign * s.curve[0][1]):
            return True
        if fit.p_gain(sign * s.best, s.tolerance) >= s.confidence:
            return False
        # the fit knows this curve, the curve model how GAN curves go on (a plateau that falls later)
        probabilities = s.forecast()
        return probabilities is not None and exceeds(probabilities, s.tolerance) < s.confidence


class CurveForecast(Forecast):
    """The learned curve model's forecast (``curve_model``): P(the rest of the budget beats the
    best by more than ``tolerance`` x |best|) fell below ``confidence``. Where ``forecast`` reads
    a curve through a fitted ensemble and hand-set rules for a turn (TURN, UNDONE) and asks this
    model only to confirm a stop, the model here decides alone. It learned
    from curves that saturate, sit on a plateau and then fall, rise first, collapse, drift and
    wander. Like ``forecast`` it needs ``max_epochs`` and is silent before ``annealed_at``: a
    schedule's annealing is not in the curve."""

    def decides(self, s: "EarlyStopper") -> bool:
        probabilities = s.forecast()
        if probabilities is None:
            return False
        from ganstop.stopping.curve_model import exceeds

        return exceeds(probabilities, s.tolerance) < s.confidence


class Patience(Criterion):
    """Keras/Lightning: ``patience`` epochs without a ``min_delta`` gain, and not before
    ``patience_increase`` x the last improvement's epoch. Off while ``patience`` is None."""

    reason = StopReason.PATIENCE_EXHAUSTED

    def active(self, s: "EarlyStopper") -> bool:
        return s.patience is not None

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        return not improved and s.wait >= s.patience and not s._increase_waits(s.checks[-1][0])


class Trend(Criterion):
    """A Theil-Sen slope over the checks of the last ``window`` epochs (at least 3), projected
    over ``patience`` epochs (``window`` when patience is off), gains no more than min_delta."""

    reason = StopReason.TREND_FLAT

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        last = s.checks[-1][0]
        if s.checks[0][0] > last - s.window + 1 or len(s.checks) < 3:
            return False
        from scipy.stats import theilslopes  # the stopper stays importable without scipy's load time

        recent = [c for c in s.checks if c[0] > last - s.window]
        recent = recent if len(recent) >= 3 else s.checks[-3:]
        slope = theilslopes([c[1] for c in recent], [c[0] for c in recent]).slope
        horizon = max(s.patience if s.patience is not None else s.window, 1)
        projected = -slope * horizon if s.mode == "min" else slope * horizon
        se = recent[-1][2]
        return projected <= s._delta(s.best, se, se)


class GeneralizationLoss(Criterion):
    """Prechelt's GL_alpha: more than ``gl_alpha`` percent worse than the best."""

    reason = StopReason.GENERALIZATION_LOSS

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        return s._generalization_loss(s.checks[-1][1]) > s.gl_alpha


class ProgressQuotient(Criterion):
    """Prechelt's PQ_alpha: GL over the progress of the strip before this check (which this
    check must not inflate)."""

    reason = StopReason.PROGRESS_QUOTIENT

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        epoch, value, _ = s.checks[-1]
        if s.checks[0][0] > epoch - s.strip:
            return False
        strip = [v for e, v, _ in s.checks[:-1] if e >= epoch - s.strip] or [s.checks[-2][1]]
        gl, progress = s._generalization_loss(value), s._progress(strip)
        return gl > 0 and (progress == 0 or gl / progress > s.pq_alpha)


class SuccessiveWorsening(Criterion):
    """Prechelt's UP_s: the values at the ends of the last ``up_strips`` strips each got worse."""

    reason = StopReason.SUCCESSIVE_WORSENING

    def fires(self, s: "EarlyStopper", improved: bool) -> bool:
        epoch = s.checks[-1][0]
        ends = [s._value_at(epoch - i * s.strip) for i in range(s.up_strips + 1)]
        return None not in ends and all(s._gain(a, b) < 0 for a, b in zip(ends, ends[1:]))


CRITERIA: dict[str, Criterion] = {"forecast": Forecast(), "curve_model": CurveForecast(), "patience": Patience(), "trend": Trend(),
                                  "gl": GeneralizationLoss(), "pq": ProgressQuotient(), "up": SuccessiveWorsening()}
