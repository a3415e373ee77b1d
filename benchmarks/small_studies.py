"""Pruners replayed on small studies: random 12-trial draws from each table, each one study.

``study_replay.py`` replays whole tables (24 to 40 runs of one project). There several trials end
near the best, so a pruner that throws one of them away still keeps another. A user's study is
often smaller: the issue's study from another project had 12 runs, and there the best trial is
often alone. Each draw here takes ``--trials`` runs of a table at random, in a random order, and
replays them as one study exactly as ``study_replay.py`` does (raw reports on a 50-step axis; a
pruned trial spends the share of its budget it ran); success is the draw's own best completed trial
within 5% (and 2%) of the best value among the draw's runs. The same ``--draws`` draws (seeded by
their index) for every method; tables with no more runs than ``--trials`` are left out.

Draws seeded 0 and up are reported here; choose defaults on others (ForecastPruner's noise of two
checks was chosen on draws seeded 20000 to 20099).

    python benchmarks/small_studies.py [--trials 12] [--draws 300] [--jobs N] [--no-report]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import optuna
from _report import publish
from study_replay import CURVES, METHODS, cheapest_safe_share, runs_of, score

from ganstop.stopping.replay import load_curves


def draws(n_runs: int, trials: int, count: int) -> list[np.ndarray]:
    """``count`` draws of ``trials`` run indices, each in its own random order (seeded by its index)."""
    return [np.random.default_rng(k).choice(n_runs, size=trials, replace=False) for k in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="trials in each drawn study")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), metavar="METHOD")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes replaying (table, method) pairs")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # PatientPruner's, once per study
    started = time.perf_counter()
    tables, skipped = [], []
    for path in sorted(CURVES.glob("*.json")):
        _, curves = load_curves(path)
        if len(curves) <= args.trials:
            skipped.append(f"`{path.name}` ({len(curves)} runs)")
            continue
        tables.append((path.stem, runs_of(curves), curves[0].mode))
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs = {(name, m): pool.submit(score, runs, mode, draws(len(runs), args.trials, args.draws), m)
                for name, runs, mode in tables for m in args.methods}
        scores = {name: {m: jobs[name, m].result() for m in args.methods} for name, _, _ in tables}
    names = list(scores)
    lines = [f"{args.draws} studies of {args.trials} trials drawn from each table: the share of draws keeping a trial "
             f"within 5% of the draw's best (within 2%), at the mean share of the epochs, and the worst gap:", "",
             "| method | " + " | ".join(names) + " | mean epochs |", "| --- |" + " --- |" * (len(names) + 1)]
    for m in args.methods:
        cells = [f"{s[m]['within5']:.0%} ({s[m]['within2']:.0%}) at {s[m]['share']:.2f}, {s[m]['gap_max']:+.0%}"
                 for s in scores.values()]
        mean = statistics.fmean(s[m]["share"] for s in scores.values())
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {mean:.2f} |")
    lines += ["", f"Left out (no more runs than a draw): {', '.join(skipped)}." if skipped else ""]
    result: dict[str, object] = {"trials": args.trials, "draws": args.draws, "tables": len(names)}
    cheapest = cheapest_safe_share(scores, args.methods)
    if cheapest is not None:
        result["cheapest_safe_optuna_share"] = cheapest
    for method in ("ForecastPruner", "ForecastPruner + own stopper", "median, startup 3"):
        if method in args.methods:
            tag = method.split(",")[0].split()[0].lower() + ("_stopper" if "+" in method else "")
            result[f"{tag}_min_within5"] = min(s[method]["within5"] for s in scores.values())
            result[f"{tag}_share"] = statistics.fmean(s[method]["share"] for s in scores.values())
            result[f"{tag}_worst_gap"] = max(s[method]["gap_max"] for s in scores.values())
    result["seconds"] = time.perf_counter() - started
    publish(f"Pruners replayed on small studies ({args.trials} trials drawn from each table)", lines, result,
            report=not args.no_report)


if __name__ == "__main__":
    main()
