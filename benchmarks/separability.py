"""How early a table's trials can be told apart, beside what ForecastPruner spends on it.

A pruner saves epochs by pruning trials early, and it keeps the best only if, by then, the curves
already say which trial ends best. Per table of ``benchmarks/curves/`` (one trial per run, as
``study_replay.py`` replays them) and per tenth of the budget: the Spearman rank correlation of
each run's level there (the median of its latest reports, as ``ForecastPruner`` reads it) with the
best it ends with, and how many runs stand ahead of the run that ends best. Where the correlation
is low, a trial's level says little about where it ends: a pruner that keeps the best has to
run trials on until the curves part, however it reads them. Beside it, ForecastPruner replayed on
the table as ``study_replay.py`` replays it (its first ``--orders`` trial orders).

    python benchmarks/separability.py [--curves FILE ...] [--orders 100] [--jobs N] [--no-report]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
from _report import publish
from scipy.stats import spearmanr
from study_replay import CURVES, orders_of, runs_of, score

from ganstop.stopping.replay import load_curves
from ganstop.study.forecast_pruner import level

PRUNER = "ForecastPruner"
SHARES = np.round(np.arange(0.1, 1.0, 0.1), 1)
MIN_RUNS = 8  # a rank correlation over fewer runs says little
PARTED = 0.7  # a table's curves have parted where the correlation first reaches this


def profile(path: Path) -> tuple[int, list[float], list[int]] | None:
    """The table's runs, and per share: the rank correlation of level with the run's best, and the
    runs ahead of the run that ends best; None for a table of fewer than MIN_RUNS runs."""
    _, curves = load_curves(path)
    if len(curves) < MIN_RUNS:
        return None
    sign = 1.0 if curves[0].mode == "min" else -1.0
    runs = [sign * np.array([v for _, v, _ in c.checks]) for c in curves]
    ends = np.array([r.min() for r in runs])
    best = int(np.argmin(ends))
    rhos, ahead = [], []
    for share in SHARES:
        levels = []
        for r in runs:
            k = max(1, int(share * r.size))
            levels.append(level(r[:k], np.arange(1.0, k + 1)))
        levels = np.array(levels)
        rhos.append(float(spearmanr(levels, ends)[0]))
        ahead.append(int((levels < levels[best]).sum()))
    return len(runs), rhos, ahead


def pruned(path: Path, orders: int) -> dict[str, float]:
    """ForecastPruner on this table, replayed on study_replay's first ``orders`` trial orders."""
    _, curves = load_curves(path)
    runs = runs_of(curves)
    return score(runs, curves[0].mode, orders_of(len(runs), orders), PRUNER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curves", type=Path, nargs="+", default=sorted(CURVES.glob("*.json")))
    parser.add_argument("--orders", type=int, default=100, help="trial orders ForecastPruner is replayed on")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes replaying tables")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    profiles = {path: found for path in args.curves if (found := profile(path)) is not None}
    with ProcessPoolExecutor(args.jobs) as pool:
        replays = dict(zip(profiles, pool.map(pruned, profiles, [args.orders] * len(profiles))))
    header = ("| table | runs | " + " | ".join(f"{s:.0%}" for s in SHARES) +
              f" | parted at | {PRUNER}: epochs (within 5%) |")
    lines = ["Per table, at each share of the budget: the rank correlation (Spearman) of a run's level there "
             "with the best it ends with, and in brackets the runs standing ahead of the run that ends best. "
             f"Parted at: the first share where the correlation reaches {PARTED}. Beside it, the mean share of the "
             f"epochs {PRUNER} spends on the table (its first {args.orders} trial orders in `study_replay.py`), "
             "and the share of orders keeping a trial within 5% of the best.", "",
             header, "| --- |" + " --- |" * (len(SHARES) + 3)]
    result: dict[str, object] = {"orders": args.orders}
    for path, (n_runs, rhos, ahead) in profiles.items():
        parted = next((float(s) for s, r in zip(SHARES, rhos) if r >= PARTED), 1.0)
        replay = replays[path]
        cells = " | ".join(f"{r:+.2f} ({a})" for r, a in zip(rhos, ahead))
        lines.append(f"| `{path.stem}` | {n_runs} | {cells} | {parted:.0%} | "
                     f"{replay['share']:.2f} ({replay['within5']:.0%}) |")
        result[f"{path.stem}_parted_at"] = parted
        result[f"{path.stem}_pruner_share"] = replay["share"]
    publish("How early a study's trials part, and what the pruner spends there", lines, result,
            report=not args.no_report)


if __name__ == "__main__":
    main()
