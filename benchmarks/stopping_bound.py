"""How early could any rule stop on the real curves? Learned rules against the default forecast.

The default's goal on the 30 CIFAR-10 curves (29 within 5% at a mean of at most 65% of the
budget) asks a stopper to stop, on mean, about where the curves come within 2% of their final
best (hindsight: 65% of the budget). This script asks whether a curve prefix carries that
information at all: it trains classifiers of "the best so far is still more than 5% worse than
the run's final best" on scale-free features of every prefix of the real curves, cross-fitted
(a model trained on the even-indexed curves of each file scores the odd-indexed ones, and the
other way round, so no curve is scored by a model that saw it). A learned rule stops at the
first check from 10% of the budget on where that probability falls below a threshold; the
thresholds trace its frontier of runs within 5% against budget used, beside the default's. The
third rule also sees the fitted forecast's own probability (``forecast.fit``, the half of the
default rule that reads the curve itself), so it starts from what the fit knows.

A rule learned from the data itself, scored out of sample, is the best a curve-only stopper
can hope to reach on these curves; where it does no better than the default, the remaining
compute is not in the curves.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np

from _report import ROOT, publish

from ganstop import recipe as rc
from ganstop.stopping.forecast import noise
from ganstop.stopping.replay import Curve, load_curves, replay, summarize

CURVES = ROOT / "benchmarks" / "curves"
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
EARLIEST = 0.1
# the learned rules, and their names in the RESULT line
KINDS = {"logistic": "logistic", "boosted trees": "trees", "logistic, with the forecast's probability": "stacked"}


def features(epochs: np.ndarray, values: np.ndarray, n: int, budget: int) -> list[float]:
    """Scale-free summaries of the first ``n`` checks: the share of the budget, the best's log-gain
    over the latest 1/2, 1/4 and 1/8 of the epochs (alone and times the doublings left), how far
    the latest checks sit above the best, and the noise relative to the best."""
    t, best = epochs[n - 1], values[:n].min()
    u, doublings = t / budget, math.log2(budget / t)

    def gain(back: float) -> float:
        k = int(np.searchsorted(epochs[:n], (1 - back) * t, side="right"))
        return math.log(values[:max(k, 1)].min() / best)

    g2, g4, g8 = gain(0.5), gain(0.25), gain(0.125)
    latest = min(int(np.searchsorted(epochs[:n], 0.875 * t)), max(n - 3, 0))
    window = values[int(np.searchsorted(epochs[:n], 0.5 * t)):n]
    sigma = noise(window) / best if window.size >= 3 else 0.0
    return [1.0, math.log(u), g2, g4, g8, g2 * doublings, g4 * doublings,
            math.log(np.median(values[latest:n]) / best), sigma, sigma * doublings]


def prefixes(curve: Curve, forecast: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels (still more than 5% worse than the final best) of every prefix of 3+
    checks; with ``forecast``, also the default forecast's P(a gain beyond 5%) and its log."""
    epochs = np.array([e for e, _, _ in curve.checks], float)
    values = np.array([v for _, v, _ in curve.checks], float)
    X = np.array([features(epochs, values, n, curve.budget) for n in range(3, len(values) + 1)])
    if forecast:
        fits = curve.fits(rc.StoppingConfig().forecast_window)
        p = np.array([1.0 if (f := fits(n)) is None else f.p_gain(values[:n].min(), 0.05)
                      for n in range(3, len(values) + 1)])
        X = np.column_stack([X, p, np.log(np.maximum(p, 1e-6))])
    y = np.array([values[:n].min() > 1.05 * values.min() for n in range(3, len(values) + 1)])
    return X, y


def train(parts: list[tuple[np.ndarray, np.ndarray]], kind: str):
    """A classifier of ``kind`` on the prefixes of some curves (``prefixes`` of each)."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = np.vstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    weight = np.concatenate([np.full(len(p[1]), 100.0 / len(p[1])) for p in parts])  # each curve counts once
    model = (LogisticRegression(C=10.0, max_iter=5000, fit_intercept=False) if kind.startswith("logistic") else
             GradientBoostingClassifier(n_estimators=100, max_depth=2, learning_rate=0.05, subsample=0.7, random_state=0))
    return model.fit(X, y, sample_weight=weight)


def learned_stop(curve: Curve, p_worse: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share of the budget used, gap of the kept best) when stopping at the first check from
    EARLIEST of the budget on whose predicted probability is below ``threshold``."""
    values = [v for _, v, _ in curve.checks]
    stop = len(values)
    for n in range(3, len(values) + 1):
        if curve.checks[n - 1][0] >= EARLIEST * curve.budget and p_worse[n - 3] < threshold:
            stop = n
            break
    return curve.checks[stop - 1][0] / curve.budget, curve.gap(min(values[:stop]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()

    folds: list[list[Curve]] = [[], []]
    for path in sorted(CURVES.glob("*.json")):
        _, curves = load_curves(path)
        folds[0] += curves[0::2]
        folds[1] += curves[1::2]
    sets = {"CIFAR-10": lambda c: c.name.startswith("CIFAR10/"), "every real curve": lambda c: True}
    rows, result = [], {}
    for setname, member in sets.items():
        curves = [c for fold in folds for c in fold if member(c)]
        for tolerance in (0.02, 0.05, 0.1):
            s = summarize([replay(c, rc.StoppingConfig(tolerance=tolerance)) for c in curves])
            rows.append(f"| {setname} ({len(curves)}) | default forecast, tolerance {tolerance:g} | {s['within5']}/{s['runs']} | {s['compute_mean']:.0%} |")
        hind = statistics.fmean(c.oracle(0.02) / c.budget for c in curves)
        rows.append(f"| {setname} ({len(curves)}) | hindsight: first check within 2% of the final best | {len(curves)}/{len(curves)} | {hind:.0%} |")
    data = {(id(c), f): prefixes(c, f) for fold in folds for c in fold for f in (False, True)}  # features, labels
    for kind in KINDS:
        with_forecast = "forecast" in kind
        parts = [[data[id(c), with_forecast] for c in fold] for fold in folds]
        models = [train(parts[1], kind), train(parts[0], kind)]  # each fold scored by the other's model
        p_worse = {id(c): models[k].predict_proba(data[id(c), with_forecast][0])[:, 1]
                   for k, fold in enumerate(folds) for c in fold}
        scored = {}  # (set, threshold) -> (runs within 5%, mean budget used)
        for setname, member in sets.items():
            curves = [c for fold in folds for c in fold if member(c)]
            for threshold in THRESHOLDS:
                stops = [learned_stop(c, p_worse[id(c)], threshold) for c in curves]
                scored[setname, threshold] = (sum(g <= 0.05 + 1e-12 for _, g in stops), statistics.fmean(s for s, _ in stops))
                rows.append(f"| {setname} ({len(curves)}) | learned ({kind}), stop below {threshold:g} | "
                            f"{scored[setname, threshold][0]}/{len(curves)} | {scored[setname, threshold][1]:.0%} |")
        # its cheapest setting that keeps 29 of the 30 CIFAR-10 runs, and what that setting keeps on every curve
        keeps = [t for t in THRESHOLDS if scored["CIFAR-10", t][0] >= 29]
        at = min(keeps, key=lambda t: scored["CIFAR-10", t][1]) if keeps else None
        result[f"{KINDS[kind]}_cifar_compute_at_29"] = scored["CIFAR-10", at][1] if at else float("nan")
        result[f"{KINDS[kind]}_all_within5_there"] = scored["every real curve", at][0] if at else -1
    default = {name: summarize([replay(c, rc.StoppingConfig()) for fold in folds for c in fold if member(c)])
               for name, member in sets.items()}
    result.update(default_cifar_within5=default["CIFAR-10"]["within5"], default_cifar_compute=default["CIFAR-10"]["compute_mean"],
                  default_all_within5=default["every real curve"]["within5"])
    lines = ["Runs within 5% of their best and the mean share of the budget used, for the default forecast and for",
             "rules learned from the curves themselves (cross-fitted: each curve is scored by a model trained on the",
             "other half of the curves). In the RESULT line, each learned rule's cheapest threshold that keeps 29 of the 30",
             "CIFAR-10 runs within 5%, and how many of every real run it keeps there (`nan` and -1: no threshold did).", "",
             "| curves | rule | within 5% | budget used (mean) |", "| --- | --- | --- | --- |", *rows, ""]
    publish("How early could a stopper stop on the real curves: learned rules against the default", lines, result, report=not args.no_report)


if __name__ == "__main__":
    main()
