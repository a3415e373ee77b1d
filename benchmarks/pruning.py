"""Pruning: the same study (same sampler seed) with the default pruner (forecast), Optuna's median
and none, each a real `ganstop tune` that trains.

Reports total epochs spent, wall time and the best objective of each, and their ratios against
none, for each sampler seed of ``--seeds``. Goal: the forecast pruner's best objective within 5%
of the unpruned study's. One seed says little (a study of 8 trials has one best, and one late
jump decides it), so the report counts the seeds that meet it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _report import scratch_tracking, write

from ganstop import recipe as rc
from ganstop.metrics.registry import resolve
from ganstop.study import runner as study_runner

PRUNERS = ("forecast", "median", "none")
PRUNER_OPTIONS = dict(startup_trials=3, warmup_steps=0, percentile=25.0, patience=2, lower=None, upper=None,
                      min_resource=1, reduction_factor=3)


def run(recipe: rc.Recipe, pruner: str, trials: int, folder: Path, sampler_seed: int) -> dict:
    started = time.perf_counter()
    summary = study_runner.run_study(
        recipe, n_trials=trials, timeout=None, storage_url=f"sqlite:///{folder / f'{pruner}.db'}",
        study_name=f"bench-{pruner}", pruner=pruner, pruner_options=PRUNER_OPTIONS, quality_only=False, workers=1,
        heartbeat=30, grace=120, retries=0, sampler_seed=sampler_seed, experiment_name=None, progress=False, argv=[])
    summary["seconds"] = time.perf_counter() - started
    return summary


def fate(folder: Path, pruners: list[str]) -> list[str]:
    """What each pruner did to the trial the unpruned study found best (the same sampler seed
    gives the same parameters until the studies' trials part): where it was pruned, and what its
    reports were then and at its end, so a lost best shows whether anything before its cut foretold it."""
    import optuna

    def load(pruner: str) -> optuna.Study:
        return optuna.load_study(study_name=f"bench-{pruner}", storage=f"sqlite:///{folder / f'{pruner}.db'}")

    best = load("none").best_trial
    reports = best.intermediate_values
    out = [f"The unpruned study's best: trial {best.number}, {best.value:.4g}, reports "
           + ", ".join(f"{reports[s]:.3g}" for s in sorted(reports)) + "."]
    for pruner in (p for p in pruners if p != "none"):
        twin = next((t for t in load(pruner).trials if t.params == best.params), None)
        if twin is None:
            out.append(f"- {pruner}: its sampler never drew those parameters.")
        elif twin.state == optuna.trial.TrialState.PRUNED:
            step = twin.last_step
            out.append(f"- {pruner}: pruned it at step {step} of {max(reports)}, at {reports[step]:.4g} "
                       f"(it ended at {best.value:.4g}).")
        else:
            out.append(f"- {pruner}: kept it ({twin.state.name.lower()}, {twin.value:.4g}).")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="grid25-mlp")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="sampler seeds; each runs the same study under every pruner (one seed shows little)")
    parser.add_argument("--quick", action="store_true", help="ring8 on 20k points, 8 trials of at most 20 epochs")
    args = parser.parse_args()
    overrides = []
    if args.quick:
        args.recipe, args.trials = "ring8-mlp", 8
        overrides += [("dataset.n_train", 20_000), ("train.max_epochs", 20)]
    lines = ["| seed | pruner | trials | pruned | failed | epochs | wall s | best objective | best metric | best params |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fates, ratios = [], {p: [] for p in PRUNERS if p != "none"}
    epochs = {p: [] for p in ratios}
    for seed in args.seeds:
        recipe = rc.load(args.recipe, [("train.seed", seed), *overrides])
        folder = scratch_tracking()
        results = {p: run(recipe, p, args.trials, folder, seed) for p in PRUNERS}
        for name, s in results.items():
            best = s.get("best") or {}
            lines.append(f"| {seed} | {name} | {s['n_trials']} | {s['n_pruned']} | {s['n_failed']} | "
                         f"{s['total_epochs']} | {s['seconds']:.0f} | {best.get('value', float('nan')):.4g} | "
                         f"{best.get('best_metric', float('nan')):.4g} | {best.get('params')} |")
        full = results["none"]
        for p in ratios:
            ratios[p].append(results[p]["best"]["value"] / full["best"]["value"])
            epochs[p].append(results[p]["total_epochs"] / max(1, full["total_epochs"]))
        story = fate(folder, list(results))
        fates += [f"Seed {seed}. {story[0]}", *story[1:], ""]
    minimize = resolve(recipe).mode == "min"  # the study's direction, as ganstop tune sets it
    within = {p: sum((r <= 1.05) if minimize else (r >= 0.95) for r in ratios[p]) for p in ratios}
    result: dict[str, object] = {"recipe": args.recipe, "trials": args.trials, "seeds": len(args.seeds)}
    for p in ratios:
        tag = "" if p == "forecast" else f"{p}_"
        result[f"{tag}epochs_ratio"] = statistics.fmean(epochs[p])
        result[f"{tag}best_objective_ratio"] = (max if minimize else min)(ratios[p])  # the worst seed
        result[f"{tag}seeds_within5"] = within[p]
    lines += ["", f"Best objective within 5% of the unpruned study's: forecast on {within['forecast']} of "
              f"{len(args.seeds)} seeds, median on {within['median']}; the worst seed's ratio is on the RESULT line.",
              "", *fates]
    print("\n".join(lines))
    print(write(f"Pruning: forecast and median vs none ({args.recipe}, {args.trials} trials, "
                f"{len(args.seeds)} seed{'s' * (len(args.seeds) > 1)})", lines, result))


if __name__ == "__main__":
    main()
