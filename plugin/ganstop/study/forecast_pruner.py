"""``ForecastPruner``: prune a trial once it is unlikely to beat the study's incumbent by the end
of its budget, judged on its own curve and on what the study's other trials went on to do.

GAN curves cross: the run that ends best is often a slow starter, and a run that leads early can
collapse. Rules that compare trials at equal steps (median, percentile, successive halving) kill
the slow starters; rules that wait (patience, long warm-ups) spend most of the budget. This pruner
asks at each report: how likely is this trial, by the end of its budget, to beat the incumbent
(the best completed trial's value, on the study's objective)? It prunes when that chance is below
``confidence``, and the chance is the larger of two readings:

- the study's: each finished trial ``j`` that reached this share ``u`` of the budget gives one
  future: from its level at ``u`` (the median of its latest reports) to the best it reported after
  ``u``, as a gain relative to that level. Applied to this trial's level, how many of those futures
  beat the incumbent? A future that ends within noise of the incumbent is not a hard loss: it
  wins with the chance that the noise of two checks (this trial's end and the incumbent's, each
  read off its own trial's latest reports, as the forecast reads it) takes it below. Near-tied
  trials are told apart by luck: a hard count pruned the best of five digits trials ending within
  15% of each other in 45 of 100 orders. The incumbent's noise is the incumbent's own: a trial
  still at a bounded metric's ceiling (mode error near 1) reports almost without noise, and with
  its noise standing for both checks, near ties at the incumbent's level counted as hard losses.
  In studies of 12 trials drawn from ganstop's grid25 and ring8 tables (draws seeded apart from
  ``benchmarks/small_studies.py``'s) that kept a trial within 5% of the draw's best in 94% and 90%
  of the draws (worst +28%): slow starters still at the ceiling at a tenth of the budget were
  pruned, and ended best. With the incumbent's own noise, 99% and 97% (worst +8%), at the same
  cost. On best-so-far reports (``ganstop tune``'s), whose differences are mostly alike, the noise
  reads near zero and the count stays nearly hard.
  Completed trials count whole; a pruned trial is censored: it counts when its cut-off future
  already beat the incumbent, and is left out otherwise (its future is unknown). The share is
  read only where ``n_min_trials`` finished trials reached this share, and smoothed by PRIOR
  pseudo-futures that win as often as the learned curve model (``stopping.curve_model``, the one
  the stopper asks) says this trial's own curve will beat the incumbent: the model is the prior,
  the study's own finished trials the evidence, so it speaks most while few trials have finished
  and fades as they add up. An uninformed prior (half of the pseudo-futures winning, as before)
  spent 0.62 of the epochs over the seven study tables instead of 0.60, on 100 trial orders
  seeded apart from the benchmark's, every best kept either way; the saving is on ganstop's own
  tables, which the model never saw (grid25 0.73 -> 0.67, digits 0.62 -> 0.59, ring8 0.58 -> 0.56).
- the trial's own: ganstop's fitted curve ensemble (``stopping.forecast.fit``, which the stopper
  also asks) of what the rest of its budget can reach, read as P(a check by the end beats the
  incumbent). A slow starter still falling fast is kept by this reading even when no finished
  trial gained as much from as far behind; a trial that collapsed has a high level, so the
  study's futures no longer carry it, and its own forecast says it will not come back. The
  curve model is not asked for this reading, only for the futures' prior: read as the lower of
  fit and model it saved epochs (0.56 of them instead of 0.63 over the seven study tables,
  ring8's then at 10 trials, every best kept, on 100 trial orders apart from the benchmark's),
  but it is one step from losing slow starters: at confidence 0.2 it lost Tiny-ImageNet's best
  run, which falls 3x after a tenth of its budget, in 59% of the orders (the fit alone: none),
  and it prunes a hand-made run falling 40x at its 5th report (tests/test_pruner.py): five
  checks into its budget, that run looks like the many GAN curves that slow down (a model
  trained on a prior with falls twice as long and deep still gave it P < 0.03). Read as the
  higher of the two it only spent more (0.65), and kept no best the fit alone lost.

Steps are read as shares of ``max_resource`` (trials of different lengths, and steps in any
unit, line up), a trial whose best so far already beats the incumbent is never pruned, nor one
whose best check ties it within the noise of two checks (the chance that noise puts it below is
at least ``confidence``): pruning such a trial, however its curve goes on, throws away a
checkpoint as good as the incumbent but for luck. Without this, ForecastPruner lost ring8's best
trial in 3 of 100 trial orders (seeded apart from the benchmark's): its best reported check,
0.0209, was 5% behind the incumbent (0.0199), within its noise, and it was pruned as it
collapsed at 96% of its budget, its best checkpoint (0.0182) with it. With it, none, and 0.619
of the epochs over the seven study tables instead of 0.622 (a near tie kept completes as a
better incumbent sooner). Nothing is pruned before ``warmup`` of the budget. It works on raw
values (plain Optuna) and on best-so-far values plus a compute charge (``ganstop tune``): both
are the study's objective at that step. Non-finite values of finished trials are ignored; a
trial whose latest report is NaN or infinite (in the wrong direction) is pruned, as Optuna's
median pruner does.

Same decision on every worker: the pruner reads the other trials through the storage
(``study.get_trials``), uses no randomness, and caches each finished trial's futures by trial
number (finished trials never change) behind a lock, so ``n_jobs`` threads share it.
"""

from __future__ import annotations

import math
import threading
from statistics import NormalDist

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from ganstop.stopping import curve_model, forecast

GRID = 200  # the budget's shares are read at this resolution
LEVEL_SHARE = 0.125  # a trial's level: the median of its reports in this latest share of its steps ...
LEVEL_MIN = 3  # ... and at least this many
WINDOW = 0.5  # the own forecast fits the reports of this latest share of the steps (all, while too few)
PRIOR = 0.5  # pseudo-futures smoothing the study's share of winning ones; they win as the curve model says
CONFIDENCE = 0.1  # the default: prune below this chance of beating the incumbent (docs/studies.md)


def own_chance(steps: np.ndarray, values: np.ndarray, max_resource: float, bar: float) -> float | None:
    """P(the trial's own curve reaches below ``bar`` by ``max_resource``), values lower-is-better;
    None when the curve has too few reports for a forecast: the fitted ensemble the stopper also
    asks (``stopping.forecast``), fitted on the latest WINDOW of the reports."""
    keep = steps > 0
    budget = max(max_resource, float(steps[-1]))
    fitted = forecast.fit(steps[keep], values[keep], budget, WINDOW) or forecast.fit(steps[keep], values[keep], budget, 1.0)
    return None if fitted is None else fitted.p_gain(bar, 0.0)


def model_chance(steps: np.ndarray, values: np.ndarray, max_resource: float, bar: float) -> float:
    """The learned curve model's P(the trial's best by ``max_resource`` beats ``bar``), values
    lower-is-better; one half (no opinion) while the curve has too few reports for a forecast.
    The model reads shares of the budget, so steps in any unit do."""
    keep = steps > 0
    probabilities = curve_model.forecast(steps[keep], values[keep], max(max_resource, float(steps[-1])))
    if probabilities is None:
        return 0.5
    best = float(values[keep].min())
    return curve_model.exceeds(probabilities, max(0.0, (best - bar) / max(abs(best), 1e-12)))


def latest_noise(steps: np.ndarray, values: np.ndarray) -> float:
    """One check's noise (``forecast.noise``) over the latest WINDOW of the reports: a check's
    scatter where the trial is now, which is where its next checks will be."""
    return forecast.noise(values[int(np.searchsorted(steps, (1 - WINDOW) * steps[-1])):])


def level(values: np.ndarray, steps: np.ndarray) -> float:
    """The median of the reports in the latest LEVEL_SHARE of the steps so far (at least LEVEL_MIN):
    where the curve is now, not its luckiest check."""
    first = int(np.searchsorted(steps, (1 - LEVEL_SHARE) * steps[-1], side="left"))
    return float(np.median(values[min(first, max(0, values.size - LEVEL_MIN)):]))


class ForecastPruner(BasePruner):
    """Prune when P(this trial beats the best completed trial by the end of its budget) < ``confidence``.

    Args:
        max_resource: the step a trial's budget ends at (``"auto"``: the largest last step of the
            completed trials).
        confidence: prune below this chance of beating the incumbent. Low, as the stopper's: in a
            study of near-tied trials each is fairly unlikely to beat the best of many, and the few
            that will look like the rest until the end (docs/studies.md).
        warmup: share of ``max_resource`` before which no trial is pruned.
        n_min_trials: finished trials that reached a share before it can prune there. One: the
            curve model's prior and the trial's own forecast carry the decisions while few trials
            have finished (docs/studies.md: 3 spent 0.60 of the epochs, 1 spends 0.54, every best
            kept; and at confidence 0.2 it kept digits' best in 98% of the orders, 3 in 89%).
    """

    def __init__(self, max_resource: int | str = "auto", *, confidence: float = CONFIDENCE, warmup: float = 0.1,
                 n_min_trials: int = 1) -> None:
        if not (max_resource == "auto" or (isinstance(max_resource, int) and not isinstance(max_resource, bool)
                                           and max_resource >= 1)):
            raise ValueError(f"max_resource must be an int >= 1 or 'auto', but got {max_resource!r}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), but got {confidence!r}")
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup must be a share of the budget in [0, 1), but got {warmup!r}")
        if n_min_trials < 1:
            raise ValueError(f"n_min_trials must be at least 1, but got {n_min_trials!r}")
        self._max_resource, self._confidence, self._warmup, self._n_min = max_resource, confidence, warmup, n_min_trials
        self._lock = threading.Lock()
        self._seen: dict[int, tuple[np.ndarray, np.ndarray, bool, float, float] | None] = {}
        self._table: tuple | None = None  # (levels, futures, complete, values, noises) stacked over the finished trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        if study._is_multi_objective():
            raise ValueError("ForecastPruner does not support multi-objective studies")
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        latest = trial.intermediate_values[step]
        if math.isnan(latest) or sign * latest == math.inf:
            return True
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        with self._lock:
            max_resource = self._resource(finished)
            if max_resource is None or step < self._warmup * max_resource:
                return False
            levels, futures, complete, values, noises = self._update(finished, sign, max_resource)
        if not np.isfinite(values).any():
            return False
        leader = int(np.nanargmin(values))  # the incumbent's trial
        incumbent = float(values[leader])
        steps = np.array(sorted(s for s, v in trial.intermediate_values.items() if math.isfinite(v)), float)
        ys = np.array([sign * trial.intermediate_values[int(s)] for s in steps])
        if ys.size == 0 or ys.min() < incumbent:
            return False
        # near ties are told apart by luck: within two checks' noise (this trial's, the incumbent's),
        # its best check, or the end a future leads it to, beats the incumbent by chance, not surely
        sigma = math.hypot(latest_noise(steps, ys), noises[leader])
        if sigma > 0 and NormalDist(float(ys.min()), sigma).cdf(incumbent) >= self._confidence:
            return False  # its best check is already a near tie: pruning would throw it away
        column = min(GRID, int(GRID * step / max_resource))
        here = level(ys, steps)
        reached = np.isfinite(levels[:, column]) & np.isfinite(futures[:, column])
        if reached.sum() < self._n_min:
            return False
        now = levels[reached, column]
        gains = (now - futures[reached, column]) / np.maximum(np.abs(now), 1e-12)
        ends = here - gains * abs(here)  # where each future leads this trial
        wins = ends < incumbent
        counted = wins | complete[reached]  # a censored future that fell short is unknown: left out
        chance = [NormalDist(end, sigma).cdf(incumbent) for end in ends[counted]] if sigma > 0 else wins[counted]
        won, n = float(np.sum(chance)), counted.sum() + PRIOR
        if won / n >= self._confidence:
            return False
        # PRIOR pseudo-futures win as often as the curve model says (asked only where that can decide)
        if (won + PRIOR) / n >= self._confidence and \
                (won + PRIOR * model_chance(steps, ys, max_resource, incumbent)) / n >= self._confidence:
            return False
        own = own_chance(steps, ys, float(max_resource), incumbent)
        return own is not None and own < self._confidence

    def _resource(self, finished: list[FrozenTrial]) -> float | None:
        if self._max_resource != "auto":
            return float(self._max_resource)
        ends = [t.last_step for t in finished if t.state == TrialState.COMPLETE and t.last_step]
        return float(max(ends)) if ends else None

    def _update(self, finished: list[FrozenTrial], sign: float, max_resource: float) -> tuple:
        """The stacked futures of every finished trial, recomputed only when a new one appears."""
        fresh = [t for t in finished if t.number not in self._seen]
        if fresh or self._table is None:
            for t in fresh:
                self._seen[t.number] = _futures(t, sign, max_resource)
            rows = [r for r in self._seen.values() if r is not None]
            if rows:
                self._table = (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                               np.array([r[2] for r in rows]), np.array([r[3] for r in rows], float),
                               np.array([r[4] for r in rows], float))
            else:
                empty = np.empty((0, GRID + 1))
                self._table = (empty, empty, np.empty(0, bool), np.empty(0), np.empty(0))
        return self._table


def _futures(trial: FrozenTrial, sign: float, max_resource: float) -> tuple | None:
    """Per share of the budget (GRID + 1 columns): the trial's level there and the best it reported
    after it (NaN where it had not reached the share or reported nothing after it); whether it
    completed; its value (lower-is-better; NaN unless a finite complete value); one check's noise
    over its latest WINDOW of reports."""
    items = sorted((s, sign * v) for s, v in trial.intermediate_values.items() if math.isfinite(v))
    if not items:
        return None
    steps = np.array([s for s, _ in items], float)
    ys = np.array([v for _, v in items])
    columns = np.minimum(GRID, (GRID * steps / max_resource).astype(int))
    levels, futures = np.full(GRID + 1, np.nan), np.full(GRID + 1, np.nan)
    after = np.minimum.accumulate(ys[::-1])[::-1]  # best of the reports from i on
    for i, column in enumerate(columns):
        levels[column] = level(ys[: i + 1], steps[: i + 1])
        futures[column] = after[i + 1] if i + 1 < ys.size else np.nan
    # a share between two reports reads the latest report before it
    filled = np.maximum.accumulate(np.where(np.isfinite(levels), np.arange(GRID + 1), -1))
    valid = filled >= 0
    levels[valid], futures[valid] = levels[filled[valid]], futures[filled[valid]]
    complete = trial.state == TrialState.COMPLETE
    value = sign * trial.value if complete and trial.value is not None and math.isfinite(trial.value) else np.nan
    return levels, futures, complete, value, latest_noise(steps, ys)
