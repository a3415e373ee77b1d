"""Pruners replayed on tables of whole GAN trainings, each table one Optuna study.

Each run of a table (a ``benchmarks/curves/`` file) is one trial, every trial a run of its own
length: check i of a run of n checks is reported at step ceil(50 i / n), so all trials share a
50-step axis (where several checks fall on one step, the last is reported; the run's best
checkpoint still counts). The trials are reported raw, as plain Optuna users report them, so
every pruner sees the same numbers; a completed trial's value is the best of its checks (the
best checkpoint), a pruned trial after its check i spends i/n of a budget, a completed one all
of it (or, with its own stopper, up to the stopper's check).

The same ``--orders`` random trial orders (seeded by their index) for every method. Per table and
method: the share of orders whose best completed trial is within 5% (and 2%) of the table's best
value; the mean share of the epochs of the unpruned study; the median share of those epochs spent
until the study first holds a completed trial within 5%; the worst gap.

Methods: no pruning; the trial's own stopper alone (ganstop's default ``StoppingConfig()``, replayed
as ``stopping.replay`` does); Optuna's median (startup 3 and 5, warm-up 0 and 20%), percentile 25,
successive halving and hyperband (ganstop's ``make_pruner`` defaults: min resource 1, reduction 3),
patient (median, patience 5 and 10); keeping the top 3 at 10% of the budget (Egele et al. 2023's
sanity baseline); ``ganstop.ForecastPruner`` alone and with the stopper.

``ForecastPruner``'s defaults were chosen on the CIFAR-10 table and ganstop's own study tables
(``ganstop-*.json``); every other table is held out and reported apart.

    python benchmarks/study_replay.py [--orders 500] [--curves FILE ...] [--jobs N] [--no-report]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
from _report import ROOT, publish

from ganstop import recipe as rc
from ganstop.stopping.replay import Curve, load_curves, replay
from ganstop.study.forecast_pruner import ForecastPruner
from ganstop.study.pruners import make_pruner

CURVES = ROOT / "benchmarks" / "curves"
PLOT = ROOT / "docs" / "study_replay.png"
STEPS = 50
CHOSEN_ON = ("studiogan-cifar10.json", "ganstop-")  # the tables ForecastPruner's defaults were chosen on
MIN_RUNS = 3  # a table of fewer runs is no study


class TopK(optuna.pruners.BasePruner):
    """At the first report at or after ``at`` steps, prune unless among the ``k`` best of all
    trials there (by best value so far); Egele et al. 2023's "one epoch is all you need"."""

    def __init__(self, k: int, at: int):
        self.k, self.at = k, at

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self.at or min(trial.intermediate_values) >= self.at:
            return False
        if any(self.at <= s < step for s in trial.intermediate_values):
            return False  # decided at an earlier report
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        mine = min(sign * v for s, v in trial.intermediate_values.items() if s <= step)
        others = sorted(min(sign * v for s, v in t.intermediate_values.items() if s <= step)
                        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                          optuna.trial.TrialState.PRUNED))
                        if any(s <= step for s in t.intermediate_values) and t.last_step >= self.at)
        return len(others) >= self.k and mine > others[self.k - 1]


@dataclass
class Run:
    reports: list[tuple[int, float, int]]  # (step, value, checks so far)
    n: int  # checks
    values: list[float]
    stop: int  # the check its own stopper stops after (n: never)


def runs_of(curves: list[Curve]) -> list[Run]:
    config = rc.StoppingConfig()
    out = []
    for curve in curves:
        values = [v for _, v, _ in curve.checks]
        n = len(values)
        by_step: dict[int, tuple[float, int]] = {}
        for i, v in enumerate(values, start=1):
            by_step[math.ceil(STEPS * i / n)] = (v, i)
        out.append(Run([(s, v, i) for s, (v, i) in sorted(by_step.items())], n, values,
                       replay(curve, config).stopped_epoch))
    return out


METHODS: dict[str, tuple[Callable[[], optuna.pruners.BasePruner], bool]] = {
    "no pruning": (optuna.pruners.NopPruner, False),
    "own stopper alone": (optuna.pruners.NopPruner, True),
    "median, startup 3": (lambda: make_pruner("median", startup_trials=3), False),
    "median, startup 5": (lambda: make_pruner("median", startup_trials=5), False),
    "median, startup 3, warm-up 20%": (lambda: make_pruner("median", startup_trials=3, warmup_steps=10), False),
    "median, startup 5, warm-up 20%": (lambda: make_pruner("median", startup_trials=5, warmup_steps=10), False),
    "percentile 25": (lambda: make_pruner("percentile", percentile=25.0), False),
    "successive halving": (lambda: make_pruner("successive-halving"), False),
    "hyperband": (lambda: make_pruner("hyperband", max_resource=STEPS), False),
    "patient (median, 5)": (lambda: make_pruner("patient", patience=5), False),
    "patient (median, 10)": (lambda: make_pruner("patient", patience=10), False),
    "top 3 at 10%": (lambda: TopK(3, STEPS // 10), False),
    "ForecastPruner": (lambda: ForecastPruner(max_resource=STEPS), False),
    "ForecastPruner + own stopper": (lambda: ForecastPruner(max_resource=STEPS), True),
}
OPTUNA = [m for m in METHODS if m.split(",")[0].split(" (")[0] in
          ("median", "percentile 25", "successive halving", "hyperband", "patient")]


def orders_of(n_runs: int, count: int) -> list[np.ndarray]:
    """The benchmark's trial orders: ``count`` permutations of ``n_runs`` trials, seeded by index."""
    return [np.random.default_rng(k).permutation(n_runs) for k in range(count)]


def study(runs: list[Run], order: np.ndarray, pruner: optuna.pruners.BasePruner, stopper: bool, mode: str,
          best: float) -> tuple[float, float, float | None]:
    """One study in this order: (gap of its best completed trial, share of the unpruned study's
    epochs spent, share spent until it first held a trial within 5%, or None)."""
    sign = 1 if mode == "min" else -1
    # a fixed name: Optuna's hyperband picks brackets by hashing it (a fresh name each study drew new ones)
    s = optuna.create_study(study_name="replay", direction="minimize" if mode == "min" else "maximize",
                            pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    spent, kept, first = 0.0, None, None
    for index in order:
        run = runs[index]
        end = run.stop if stopper else run.n
        trial = s.ask()
        pruned = False
        for step, value, i in run.reports:
            if i > end:
                break
            trial.report(value, step)
            if i < end and trial.should_prune():
                s.tell(trial, state=optuna.trial.TrialState.PRUNED)
                spent += i / run.n
                pruned = True
                break
        if pruned:
            continue
        value = min(run.values[:end], key=lambda v: sign * v)
        s.tell(trial, value)
        spent += end / run.n
        kept = value if kept is None or sign * value < sign * kept else kept
        if first is None and _gap(kept, best, sign) <= 0.05 + 1e-12:
            first = spent / len(order)
    return _gap(kept, best, sign) if kept is not None else math.inf, spent / len(order), first


def _gap(value: float, best: float, sign: int) -> float:
    return sign * (value - best) / max(abs(best), 1e-12)


def score(runs: list[Run], mode: str, orders: list[np.ndarray], method: str) -> dict[str, float]:
    """``method`` replayed on each order (indices of ``runs``: every run, or a draw of them), each
    judged against the best value among its own runs."""
    factory, stopper = METHODS[method]
    sign = 1 if mode == "min" else -1
    results = []
    for order in orders:
        best = min((v for i in order for v in runs[i].values if math.isfinite(v)), key=lambda v: sign * v)
        results.append(study(runs, order, factory(), stopper, mode, best))
    gaps, shares, firsts = zip(*results)
    reached = [f for f in firsts if f is not None]
    return {"within5": statistics.fmean(g <= 0.05 + 1e-12 for g in gaps),
            "within2": statistics.fmean(g <= 0.02 + 1e-12 for g in gaps),
            "share": statistics.fmean(shares), "first5": statistics.median(reached) if reached else math.inf,
            "gap_max": max(gaps)}


def cheapest_safe_share(scores: dict[str, dict[str, dict]], methods: list[str]) -> float | None:
    """The mean share of the epochs of the cheapest Optuna rule among ``methods`` that keeps a trial
    within 5% in at least 95% of the orders of every table (``scores``: table -> method -> score)."""
    safe = [m for m in OPTUNA if m in methods and all(s[m]["within5"] >= 0.95 for s in scores.values())]
    shares = [statistics.fmean(s[m]["share"] for s in scores.values()) for m in safe]
    return min(shares) if shares else None


def plot(scores: dict[str, dict[str, dict]], path: Path) -> None:
    """Per method, the mean share of the epochs over the tables against the worst table's share of
    orders that kept a trial within 5%; each table's point faint behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for k, method in enumerate(METHODS):
        color = f"C{k % 10}"
        points = [(s[method]["share"], s[method]["within5"]) for s in scores.values()]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=color, alpha=0.25, s=12)
        x, y = statistics.fmean(p[0] for p in points), min(p[1] for p in points)
        ax.scatter([x], [y], color=color, s=60, marker="*" if "Forecast" in method else "o", label=method)
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("share of the unpruned study's epochs (big: mean over the tables)")
    ax.set_ylabel("orders keeping a trial within 5% of the best (big: worst table)")
    ax.set_title("Pruners replayed on GAN study tables")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost(n_trials: int = 1000, steps: int = 100) -> float:
    """Milliseconds per ForecastPruner decision in an in-memory study of ``n_trials`` finished
    trials of ``steps`` steps (the first decision fills its cache; the mean of the next 100)."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(pruner=ForecastPruner(max_resource=steps))
    t = np.arange(1, steps + 1)
    for k in range(n_trials):
        curve = 10 + 40 * rng.uniform(0.5, 2) * np.exp(-t / rng.uniform(5, 40)) + rng.normal(0, 0.5, steps)
        state = optuna.trial.TrialState.COMPLETE if k % 3 else optuna.trial.TrialState.PRUNED
        cut = steps if state == optuna.trial.TrialState.COMPLETE else int(rng.integers(10, steps))
        study.add_trial(optuna.trial.create_trial(
            state=state, value=float(curve.min()) if cut == steps else None,
            intermediate_values={int(s): float(v) for s, v in zip(t[:cut], curve[:cut])}))
    trial = study.ask()
    for s, v in zip(t[:60], 12 + 40 * np.exp(-t[:60] / 20)):
        trial.report(float(v), int(s))
    frozen = study._storage.get_trial(trial._trial_id)
    study.pruner.prune(study, frozen)
    started = time.perf_counter()
    for _ in range(100):
        study.pruner.prune(study, frozen)
    return (time.perf_counter() - started) * 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--curves", type=Path, nargs="+", help="curve files (default: every file in benchmarks/curves)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD")
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to docs/benchmarks.md")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes replaying (table, method) pairs")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    started = time.perf_counter()
    files = args.curves or sorted(CURVES.glob("*.json"))
    scores: dict[str, dict[str, dict]] = {}
    lines, skipped, chosen = [], [], []
    tables = []  # (path, source, runs, mode, orders)
    for path in files:
        source, curves = load_curves(path)
        if len(curves) < MIN_RUNS:
            skipped.append(f"`{path.name}` ({len(curves)} runs)")
            continue
        modes = {c.mode for c in curves}
        if len(modes) != 1:
            raise SystemExit(f"{path}: runs of one table must share a mode, got {sorted(modes)}")
        runs = runs_of(curves)
        tables.append((path, source, runs, curves[0].mode,
                       orders_of(len(runs), args.orders)))
    # each (table, method) replays its orders alone: independent jobs, one process each
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs = {(path.stem, m): pool.submit(score, runs, mode, orders, m)
                for path, _, runs, mode, orders in tables for m in args.methods}
        for path, source, runs, _, _ in tables:
            name = path.stem
            scores[name] = {m: jobs[name, m].result() for m in args.methods}
            is_chosen = path.name.startswith(CHOSEN_ON)
            chosen += [name] if is_chosen else []
            lines += [f"`{path.name}`, {len(runs)} runs{' (defaults chosen here)' if is_chosen else ' (held out)'}: "
                      f"{source}", "",
                      "| method | best within 5% | within 2% | epochs (mean share) | epochs to a trial within 5% (median) "
                      "| worst gap |", "| --- | --- | --- | --- | --- | --- |"]
            for method, s in scores[name].items():
                lines.append(f"| {method} | {s['within5']:.0%} | {s['within2']:.0%} | {s['share']:.2f} | "
                             f"{s['first5']:.2f} | {s['gap_max']:+.0%} |")
            lines.append("")
            print("\n".join(lines[-len(scores[name]) - 5:]), flush=True)
    if skipped:
        lines += [f"Not replayed (fewer than {MIN_RUNS} runs is no study): {', '.join(skipped)}.", ""]
    headline = ["| method | " + " | ".join(scores) + " | mean epochs |", "| --- |" + " --- |" * (len(scores) + 1)]
    for method in args.methods:
        cells = [f"{s[method]['within5']:.0%} at {s[method]['share']:.2f}" for s in scores.values()]
        headline.append(f"| {method} | " + " | ".join(cells) + f" | {statistics.fmean(s[method]['share'] for s in scores.values()):.2f} |")
    lines = ["Orders keeping a trial within 5% of the table's best, at the mean share of the epochs:", "",
             *headline, "", *lines]
    result: dict[str, object] = {"orders": args.orders, "tables": len(scores)}
    cheapest = cheapest_safe_share(scores, args.methods)
    if cheapest is not None:
        result["cheapest_safe_optuna_share"] = cheapest
    for method in ("ForecastPruner", "ForecastPruner + own stopper", "own stopper alone"):
        if method in args.methods:
            tag = method.split()[0].lower() + ("_stopper" if "+" in method else "")
            result[f"{tag}_min_within5"] = min(s[method]["within5"] for s in scores.values())
            result[f"{tag}_share"] = statistics.fmean(s[method]["share"] for s in scores.values())
            result[f"{tag}_held_min_within5"] = min((s[method]["within5"] for n, s in scores.items() if n not in chosen),
                                                    default=float("nan"))
    result["decision_ms_1000_trials"] = cost()
    lines += [f"Cost: one ForecastPruner decision in an in-memory study of 1,000 finished trials of 100 steps "
              f"takes {result['decision_ms_1000_trials']:.2f} ms (its cache filled).", ""]
    result["seconds"] = time.perf_counter() - started
    if not args.no_report:
        plot(scores, PLOT)
        lines += [f"![pruners replayed]({PLOT.relative_to(ROOT / 'docs')})", ""]
    publish(f"Pruners replayed on GAN study tables ({args.orders} orders)", lines, result, report=not args.no_report)


if __name__ == "__main__":
    main()
