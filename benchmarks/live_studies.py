"""Pruners on live studies: one ``ganstop tune --pruner none`` study of the ring per sampler seed,
trained once, and every pruner replayed on each exactly (``ganstop replay --from-study --pruners``).

A pruner does not change a trial before it prunes it, so one unpruned study replays any pruner as
it would have run: on sampler seeds 3 to 7 the replayed forecast pruner spent the very epochs the
live ``--pruner forecast`` studies spent (114, 89, 102, 76 and 94). Training is the cost; so many
seeds fit where ``pruning.py`` trains every pruner's study and reports three.

Per pruner: the studies whose best objective is within 5% of the unpruned study's, the mean share
of its epochs, and the worst ratio. These seeds are reported here and ``pruning.py`` reports 0 to 2:
choose defaults on others.

    python benchmarks/live_studies.py [--seeds 3 4 ... 20] [--keep DIR] [--no-report]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

import mlflow
import optuna
from _report import publish, scratch_tracking
from pruning import run

from ganstop import recipe as rc
from ganstop.metrics.registry import resolve
from ganstop.study import replay_pruners

RECIPE, TRIALS = "ring8-mlp", 8
OVERRIDES = [("dataset.n_train", 20_000), ("train.max_epochs", 20)]  # pruning.py --quick's studies
PRUNERS = ["forecast", "median", "patient", "percentile", "successive-halving", "hyperband"]


def unpruned(keep: Path, seed: int) -> Path:
    """The folder of this seed's finished ``--pruner none`` study (tracking store and Optuna
    storage), trained here unless ``keep`` already holds it."""
    folder = keep / f"seed-{seed}"
    if (folder / "none.db").exists():
        study = optuna.load_study(study_name="bench-none", storage=f"sqlite:///{folder / 'none.db'}")
        if len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == TRIALS:
            return folder
    shutil.rmtree(folder, ignore_errors=True)
    scratch = scratch_tracking()
    run(rc.load(RECIPE, [("train.seed", seed), *OVERRIDES]), "none", TRIALS, scratch, seed)
    shutil.move(scratch, folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(3, 21)))
    parser.add_argument("--keep", type=Path,
                        help="keep the trained studies here and reuse them (default: a scratch folder)")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    keep = args.keep or scratch_tracking()
    keep.mkdir(parents=True, exist_ok=True)
    recipe = rc.load(RECIPE, OVERRIDES)
    minimize = resolve(recipe).mode == "min"
    rows = ["| seed | unpruned: epochs | best | " + " | ".join(PRUNERS) + " |",
            "| --- |" + " --- |" * (len(PRUNERS) + 2)]
    shares: dict[str, list[float]] = {p: [] for p in PRUNERS}
    ratios: dict[str, list[float]] = {p: [] for p in PRUNERS}
    for seed in args.seeds:
        folder = unpruned(keep, seed)
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        full, *pruned = replay_pruners.run(recipe, "bench-none", PRUNERS)
        cells = []
        for r in pruned:
            shares[r.pruner].append(r.epochs / full.epochs)
            ratios[r.pruner].append(r.best_value / full.best_value)
            cells.append(f"{shares[r.pruner][-1]:.2f}, {ratios[r.pruner][-1]:.3f}")
        rows.append(f"| {seed} | {full.epochs} | {full.best_value:.4g} | " + " | ".join(cells) + " |")
    worst, within = (max, lambda r: r <= 1.05) if minimize else (min, lambda r: r >= 0.95)
    summary = ["| pruner | studies within 5% of the unpruned best | epochs (mean share) | worst ratio |",
               "| --- | --- | --- | --- |"]
    result: dict[str, object] = {"recipe": RECIPE, "trials": TRIALS, "studies": len(args.seeds)}
    for p in PRUNERS:
        tag = p.replace("-", "_")
        result[f"{tag}_within5"] = sum(map(within, ratios[p]))
        result[f"{tag}_epochs"] = statistics.fmean(shares[p])
        result[f"{tag}_worst"] = worst(ratios[p])
        summary.append(f"| {p} | {result[f'{tag}_within5']} of {len(args.seeds)} | {result[f'{tag}_epochs']:.2f} | "
                       f"{result[f'{tag}_worst']:.3f} |")
    lines = [f"`ganstop tune --pruner none` studies of {RECIPE} (20k points, {TRIALS} trials of at most 20 epochs), "
             f"sampler seeds {', '.join(map(str, args.seeds))}; each pruner replayed on each study as "
             "`ganstop replay --from-study --pruners` replays it, with `make_pruner`'s defaults "
             "(median, percentile and patient: 3 startup trials; patient: patience 2).", "", *summary, "",
             "Per seed: the pruner's share of the unpruned study's epochs, and its best objective over the "
             "unpruned one's.",
             "", *rows]
    publish(f"Pruners on live studies ({RECIPE}, {len(args.seeds)} seeds, replayed)", lines, result,
            report=not args.no_report)


if __name__ == "__main__":
    main()
