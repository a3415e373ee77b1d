"""``ForecastPruner``: prune a trial once it is unlikely to beat the study's incumbent by the end
of its budget, judged on its own curve and on what the study's other trials went on to do.

GAN curves cross: the run that ends best is often a slow starter, and an early leader can
collapse. Rules that compare trials at equal steps (median, percentile, successive halving) kill
the slow starters; rules that wait (patience, long warm-ups) spend most of the budget. At each
report this pruner asks how likely the trial is to beat the incumbent (the best completed trial's
value, on the study's objective) by the end of its budget, and prunes below ``confidence``. The
chance is the larger of two readings:

- the study's: each finished trial that reached this share of the budget, of those whose level
  there stood nearest this trial's (``neighbours``), gives one future, its gain from its level
  there to the best it reported after, applied to this trial's level: a trial is judged by the
  trials that stood where it stands, so where the study's laggards never caught up a laggard goes,
  even though a slow starter's large gain from the ceiling, applied to it, would carry it. A
  future that ends within noise of the incumbent wins by chance (the noise of two checks, each
  read off its own trial), not surely or never: near-tied trials are told apart by luck.
  Completed trials count whole; a pruned trial is censored (it counts only where its cut-off
  future already won). PRIOR pseudo-futures win as often as the learned curve model
  (``stopping.curve_model``, the one the stopper asks) says this trial's own curve will: the
  model speaks while few trials have finished and fades as they add up.
- the trial's own: the stopper's fitted curve ensemble (``stopping.forecast.fit``). It keeps a
  slow starter still falling fast when no finished trial gained as much, and lets a trial that
  collapsed go.

No trial is pruned before ``warmup`` of the budget, while its best beats the incumbent, or while
its best check ties the incumbent within the noise of two checks: pruning it would throw away a
checkpoint as good as the incumbent but for luck. A trial whose latest report is NaN or infinite
(the wrong way) is pruned, as Optuna's median pruner does. Steps are read as shares of
``max_resource``, so trials of other lengths and steps in any unit line up. A report is one
check's value on the study's objective (plain Optuna's raw values; ``ganstop tune``'s carry the
compute charge so far): reports of the best so far would hide the checks' noise that near ties
are told apart by.

Same decision on every worker: the pruner reads the other trials through the storage
(``study.get_trials``), uses no randomness, and caches each finished trial's futures by trial
number (finished trials never change) behind a lock, so ``n_jobs`` threads share it. The
measurements behind each choice are in docs/studies.md ("Pruning").
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


def neighbours(levels: np.ndarray, here: float, confidence: float) -> np.ndarray:
    """Indices of the finished trials' ``levels`` nearest ``here``: the nearest 1 / ``confidence``
    (the fewest among which a chance of ``confidence`` shows once; 10 at the default) or the square
    root of their number where that is more (a nearest-neighbour estimate's usual rate), all of them
    while there are no more. Ties go to the earlier row (the table is in trial-number order, so
    every worker picks alike)."""
    k = max(math.ceil(1 / confidence - 1e-9), math.ceil(math.sqrt(levels.size)))
    if levels.size <= k:
        return np.arange(levels.size)
    return np.argsort(np.abs(levels - here), kind="stable")[:k]


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
        rows = np.flatnonzero(reached)[neighbours(levels[reached, column], here, self._confidence)]
        now, later, done = levels[rows, column], futures[rows, column], complete[rows]
        gains = (now - later) / np.maximum(np.abs(now), 1e-12)
        ends = here - gains * abs(here)  # where each future leads this trial
        wins = ends < incumbent
        counted = wins | done  # a censored future that fell short is unknown: left out
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
            rows = [self._seen[n] for n in sorted(self._seen) if self._seen[n] is not None]
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
