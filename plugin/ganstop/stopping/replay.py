"""Stopping rules replayed on recorded curves: the benchmark, the tests and the replay search.

A stopping rule does not change training before its stop, so a curve recorded to its budget
scores any rule exactly. ``Curve`` is one recorded run; ``replay`` runs a recipe's stopping
section over it with the same ``EarlyStopper.from_config`` that training uses; ``summarize``
gives the numbers every report shares. The forecasts (the curve fits, and the curve model's)
depend on the checks (and the fits on the window) but not on the tolerance, confidence or
warm-up, so they are cached per curve: a search that replays a thousand settings forecasts each
curve prefix once.

Censoring: a run that its own stopper ended early (``censored``) is known only up to its last
check. A rule that has not stopped by then is scored as stopping there, with the best it saw:
what it would have done later is unknown, so it gains and pays nothing past the record.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganstop.stopping.curve_model import CurveModel, forecast
from ganstop.stopping.forecast import Fit, fit
from ganstop.stopping.stopper import EarlyStopper
from ganstop.stopping.criteria import StopReason

WITHIN = (0.05, 0.02)  # the quality bands every report counts


@dataclass
class Curve:
    """One run's monitored metric at its checks, ``(epoch, value, se or None)``, epochs from 1."""

    name: str
    checks: list[tuple[int, float, float | None]]
    budget: int  # the epoch the run's budget ends at
    mode: str = "min"
    censored: bool = False  # ended by its own stopper before the budget: nothing known past the last check
    annealed_at: int | None = None  # when its LR schedule had annealed (training.optim.annealed_epoch); None: no decay
    _fits: dict = field(default_factory=dict, repr=False)
    _forecasts: dict = field(default_factory=dict, repr=False)

    @property
    def best_ever(self) -> float:
        values = [v for _, v, _ in self.checks]
        return min(values) if self.mode == "min" else max(values)

    def gap(self, value: float | None) -> float:
        """How much worse ``value`` is than the curve's best ever, as a share of it."""
        if value is None:
            return float("inf")
        sign = 1 if self.mode == "min" else -1
        return sign * (value - self.best_ever) / max(abs(self.best_ever), 1e-12)

    def oracle(self, within: float = WITHIN[0]) -> int:
        """Hindsight: the first epoch whose best so far is within ``within`` of the best ever."""
        running = None
        for epoch, value, _ in self.checks:
            running = value if running is None or self.gap(value) < self.gap(running) else running
            if self.gap(running) <= within:
                return epoch
        return self.checks[-1][0]

    def fits(self, window: float):
        """``n -> the forecast after the first n finite checks``, cached for this curve."""
        if window not in self._fits:
            epochs, values = self._oriented()
            cache: dict[int, Fit | None] = {}

            def at(n: int) -> Fit | None:
                if n not in cache:
                    cache[n] = fit(epochs[:n], values[:n], self.budget, window)
                return cache[n]

            self._fits[window] = at
        return self._fits[window]

    def _oriented(self) -> tuple[np.ndarray, np.ndarray]:
        """The finite checks' epochs and values, lower is better."""
        sign = 1.0 if self.mode == "min" else -1.0
        finite = [c for c in self.checks if math.isfinite(c[1])]
        return np.array([c[0] for c in finite], float), sign * np.array([c[1] for c in finite], float)

    def forecasts(self, model: CurveModel | None = None):
        """``n -> the curve model's forecast after the first n finite checks``, cached for this
        curve and ``model`` (None: the shipped one)."""
        if model not in self._forecasts:
            epochs, values = self._oriented()
            cache: dict[int, np.ndarray | None] = {}

            def at(n: int) -> np.ndarray | None:
                if n not in cache:
                    cache[n] = forecast(epochs[:n], values[:n], self.budget, model)
                return cache[n]

            self._forecasts[model] = at
        return self._forecasts[model]


@dataclass(frozen=True)
class Outcome:
    curve: str
    stopped_epoch: int
    best_epoch: int | None
    best: float | None
    gap: float  # the kept best against the best ever, as a share of it
    share: float  # the share of the budget used
    reason: str
    censored: bool  # reached the end of a censored record without stopping


def replay(curve: Curve, config: object, fast: bool = True, model: CurveModel | None = None) -> Outcome:
    """The stopping section ``config`` (a ``recipe.StoppingConfig`` or anything with its fields)
    replayed over ``curve``; ``fast`` reuses the curve's cached forecasts; ``model`` stands in for
    the shipped curve model (leave-one-source-out scoring)."""
    stopper = EarlyStopper.from_config(config, curve.mode, max_epochs=curve.budget, annealed_at=curve.annealed_at)
    fits = curve.fits(stopper.forecast_window) if fast else None
    forecasts = curve.forecasts(model) if fast or model is not None else None
    stopper.replay(curve.checks, curve.checks[-1][0] if curve.censored else curve.budget, fits, forecasts)
    cut = curve.censored and stopper.stop_reason == StopReason.MAX_EPOCHS
    best_epoch, best = stopper.best_epoch, stopper.best
    if best is None:  # a warm-up longer than this record monitored nothing: the run ends with its last check
        best_epoch, best = next((e, v) for e, v, _ in reversed(curve.checks) if e <= stopper.stopped_epoch)
    return Outcome(curve.name, stopper.stopped_epoch, best_epoch, best, curve.gap(best),
                   stopper.stopped_epoch / curve.budget, stopper.stop_reason, cut)


def summarize(outcomes: list[Outcome]) -> dict[str, float]:
    """Runs within each quality band, the mean and median share of the budget used, the worst gap."""
    shares = [o.share for o in outcomes]
    out = {f"within{round(w * 100)}": sum(o.gap <= w + 1e-12 for o in outcomes) for w in WITHIN}
    return {**out, "runs": len(outcomes), "compute_mean": statistics.fmean(shares),
            "compute_median": statistics.median(shares), "gap_max": max(o.gap for o in outcomes)}


def source_group(path: Path | str) -> str:
    """The project a curve file comes from (curves of one project share code, data and habits,
    so leave-one-source-out holds them out together): its ``project`` key, else its name before
    the first '-' (``studiogan-cifar10.json``: ``studiogan``)."""
    return json.loads(Path(path).read_text()).get("project") or Path(path).stem.split("-")[0]


def load_curves(path: Path | str) -> tuple[str, list[Curve]]:
    """A curve file (``benchmarks/curves/*.json``): its source line, and each log as a Curve
    whose check i is epoch i and whose budget is the log's length, as the log's own run had."""
    data = json.loads(Path(path).read_text())
    curves = []
    for name, entry in data["curves"].items():
        values = [float(v) for _, v in entry["checks"]]
        curves.append(Curve(name, [(i, v, None) for i, v in enumerate(values, start=1)], len(values),
                            entry.get("mode", "min")))
    return data["source"], curves
