"""Early-stopping policies against a fixed budget, replayed on the same training curves.

Every shipped recipe that needs no download trains to its full ``train.max_epochs`` for each
seed with stopping off, and its per-check curve (the monitored metric and its ``_se``) is
cached. Each policy is then replayed on exactly those curves: the replay is exact, because
validation runs under its own RNG, so stopping or not never changes the training trajectory.

Curves have a check every epoch (``metrics.every: 1``). The recipe's own stopper is also replayed
on the checks its default ``metrics.budget`` would have scheduled, simulated with the same
``CheckSchedule`` on each epoch's recorded training and validation seconds.

Policies: each recipe's own stopper (built by the same factory as training; also with a fixed
patience, ``patience_increase: 1``), the trend rule,
Prechelt's GL/PQ/UP, and a Lightning-style ``EarlyStopping`` (patience 3/5/10, min_delta 0 and
the recipe's). Per run: the stop epoch, the oracle epoch (the first epoch whose best-so-far is
within 5% of the run's best ever), and the quality gap of the best value the policy keeps.
Goal for each recipe's own stopper: within 5% of the best ever on at least 14 of 15 runs, a
median stop at most 1.5x the oracle epoch, and no Lightning-style setting better on both axes.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import statistics
import tempfile
from pathlib import Path

import torch
from _report import ROOT, publish

from ganstop import recipe as rc
from ganstop.training.cadence import CheckSchedule
from ganstop.data.sets import load_data
from ganstop.metrics.registry import resolve
from ganstop.metrics.scorer import Scorer
from ganstop.training.optim import annealed_epoch
from ganstop.stopping.replay import Curve, replay
from ganstop.training.loop import Trainer

RECIPES = ["digits-dcgan", "ring8-mlp", "grid25-mlp"]
PACKAGE = ROOT / "plugin" / "ganstop"
TRAINING_CODE = [*(f"training/{m}.py" for m in ("loop", "gan_step", "callbacks", "losses", "models", "optim")), "data/sets.py", *(f"metrics/{p.name}" for p in (PACKAGE / "metrics").glob("*.py"))]
CACHE = ROOT / "benchmarks" / ".cache" / "curves"
WITHIN = 0.05


def curve(name: str, seed: int, scale: float = 1.0) -> dict:
    """The run's per-epoch history to the full budget, trained once and cached by recipe hash."""
    overrides = [("train.seed", seed), ("metrics.every", 1), ("stopping.criteria", ["patience"]), ("stopping.patience", 10**6),
                 ("stopping.stopping_threshold", None), ("stopping.divergence_threshold", None)]
    if scale != 1.0:  # a budget the user stretched or cut: the LR schedules follow it, as in training
        base = rc.load(name)
        overrides += [("train.max_epochs", max(base.stopping.warmup + 3, int(base.train.max_epochs * scale)))]
    recipe = rc.load(name, overrides)
    # the stopper does not change the trajectory: what is trained and monitored, the code that
    # trains and scores it, and the torch build key the curve
    trained = {**recipe.to_dict(), "stopping": resolve(recipe).monitor, "search": None}
    digest = hashlib.sha256(json.dumps(trained, sort_keys=True).encode())
    for source in sorted(TRAINING_CODE):
        digest.update((PACKAGE / source).read_bytes())
    digest.update(torch.__version__.encode())  # another torch build trains another trajectory from the same seed
    key = digest.hexdigest()[:12]
    path = CACHE / f"{name}-seed{seed}-{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    data = load_data(recipe)
    scorer = Scorer(recipe, data, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as ckpt:
        result = Trainer(recipe, data, scorer, Path(ckpt), progress=False).fit()
    out = {"recipe": name, "seed": seed, "max_epochs": recipe.train.max_epochs, "monitor": result.monitor,
           "mode": result.mode, "history": result.history}
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def checks(run: dict, budget: float | None = None, max_gap: float = 1.0) -> list[tuple[int, float, float | None]]:
    """The run's checks; with ``budget`` (and its floor ``max_gap``), only those the budget
    schedule would have made."""
    schedule = CheckSchedule(budget or 1.0, max_gap, run["max_epochs"], every=None if budget else 1)
    monitor, out = run["monitor"], []
    for h in run["history"]:
        due = schedule.due(h["epoch"], h["epoch_seconds"])
        schedule.spent(h["epoch"], h["epoch_seconds"], h.get("validation_seconds", 0.0) if due else 0.0, due)
        if due and monitor in h:
            out.append((h["epoch"], h[monitor], h.get(f"{monitor}_se")))
    return out


def policies(recipe: rc.Recipe) -> dict[str, dict]:
    """Name -> stopping options over the recipe's own stopping section."""
    own = recipe.stopping.model_dump()
    lightning = {"criteria": ["patience"], "delta_reference": "improvement", "warmup": 0, "patience_increase": 1.0}
    out = {"own": own, "own, checks by budget": {**own, "budget": (recipe.metrics.budget, recipe.metrics.max_gap)},
           "own, fixed patience": {**own, "patience_increase": 1.0}}
    out["trend"] = {**own, "criteria": ["trend"]}
    out["gl5"] = {**own, "criteria": ["gl"], "gl_alpha": 5.0}
    out["pq0.75"] = {**own, "criteria": ["pq"], "pq_alpha": 0.75}
    out["up3"] = {**own, "criteria": ["up"], "up_strips": 3}
    for patience in (3, 5, 10):
        out[f"lightning p{patience} d0"] = {**own, **lightning, "patience": patience, "min_delta": 0.0,
                                             "min_delta_mode": "absolute"}
        out[f"lightning p{patience} d=recipe"] = {**own, **lightning, "patience": patience}
    return out


@functools.cache
def annealed_at(name: str, max_epochs: int) -> int | None:
    """Where the recipe's LR schedule has annealed over ``max_epochs``: the stopper sees it in training too."""
    return annealed_epoch(rc.load(name).decay, max_epochs)


def score(run: dict, options: dict) -> dict:
    options = dict(options)
    budget = options.pop("budget", None)
    annealed = annealed_at(run["recipe"], run["max_epochs"])
    full = Curve(run["recipe"], checks(run), run["max_epochs"], run["mode"], annealed_at=annealed)
    seen = Curve(run["recipe"], checks(run, *budget), run["max_epochs"], run["mode"], annealed_at=annealed) if budget else full
    outcome = replay(seen, rc.StoppingConfig(**options))
    return {"stop": outcome.stopped_epoch, "oracle": full.oracle(WITHIN), "budget": run["max_epochs"],
            "gap": full.gap(outcome.best), "best": outcome.best, "best_ever": full.best_ever, "reason": outcome.reason,
            "checks": len(seen.checks), "kept": next((h for h in run["history"] if h["epoch"] == outcome.best_epoch), {})}


def summarize(rows: list[dict]) -> dict:
    return {"within5_runs": sum(r["gap"] <= WITHIN for r in rows), "runs": len(rows),
            "checks_median": statistics.median(r["checks"] for r in rows),
            "epochs_ratio_median": statistics.median(r["stop"] / r["budget"] for r in rows),
            "oracle_ratio_median": statistics.median(r["stop"] / r["oracle"] for r in rows),
            "gap_median": statistics.median(r["gap"] for r in rows), "gap_max": max(r["gap"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=RECIPES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-scale", type=float, default=1.0,
                        help="train to this multiple of each recipe's budget: 2 asks what a stopper saves when the "
                             "budget is longer than the run needs")
    budget.add_argument("--quick", action="store_true", help="a quarter of each budget (a smoke run, not the goal)")
    parser.add_argument("--no-report", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = parser.parse_args()
    if args.budget_scale <= 0:
        parser.error("--budget-scale must be > 0")
    scale = 0.25 if args.quick else args.budget_scale
    runs = [curve(name, seed, scale) for name in args.recipes for seed in args.seeds]
    by_policy: dict[str, list[dict]] = {}
    run_lines = []
    for run in runs:
        for policy, options in policies(rc.load(run["recipe"])).items():
            by_policy.setdefault(policy, []).append(score(run, options))
        own = by_policy["own"][-1]
        run_lines.append(f"| {run['recipe']} | {run['seed']} | {run['monitor']} | {own['budget']} | {own['oracle']} | "
                         f"{own['stop']} | {own['reason']} | {own['best_ever']:.4g} | {own['best']:.4g} | "
                         f"{own['gap']:+.1%} |")
    summaries = {policy: summarize(rows) for policy, rows in by_policy.items()}
    quality = []  # the 2D models the recipes' own stoppers keep, against the published table
    for name in args.recipes:
        kept = [row["kept"] for run, row in zip(runs, by_policy["own"]) if run["recipe"] == name and "modes" in row["kept"]]
        if kept:
            per_run = ", ".join(f"{k['modes']:.0f}/{k['hq_ratio']:.3f}" for k in kept)
            quality.append(f"| {name} | {len(kept)} | {statistics.fmean(k['modes'] for k in kept):.2f} | "
                           f"{statistics.fmean(k['hq_ratio'] for k in kept):.1%} | {per_run} |")
    own = summaries["own"]
    lightning = {p: s for p, s in summaries.items() if p.startswith("lightning")}
    dominated = any(s["within5_runs"] >= own["within5_runs"] and s["epochs_ratio_median"] <= own["epochs_ratio_median"]
                    and (s["within5_runs"] > own["within5_runs"] or s["epochs_ratio_median"] < own["epochs_ratio_median"])
                    for s in lightning.values())
    lines = ["Each recipe's own stopper, per run:", "",
             "| recipe | seed | monitor | budget | oracle epoch | stopped at | reason | best ever | best kept | gap |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *run_lines, "",
             f"Every policy over all {len(runs)} runs (epochs as a share of the budget and of the oracle epoch, "
             "medians; gap = how much worse the kept best is than the best ever):", "",
             "| policy | within 5% | epochs / budget | epochs / oracle | checks seen (median) | gap median | gap max |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for policy, s in summaries.items():
        lines.append(f"| {policy} | {s['within5_runs']}/{s['runs']} | {s['epochs_ratio_median']:.0%} | "
                     f"{s['oracle_ratio_median']:.2f} | {s['checks_median']:.0f} | {s['gap_median']:+.1%} | "
                     f"{s['gap_max']:+.1%} |")
    if quality:
        lines += ["", "The 2D models the own stoppers keep (their restored epoch, scored on that check's samples: the recipe's metrics.n_samples, ring 10,000, grid 2,500; 3-std rule; "
                  "PacGAN Table 1: GAN 6.3 modes / 98.2% on the ring and 17.3 / 94.8% on the grid, "
                  "PacGAN4 7.8 / 95.9% and 24.8 / 93.6%):", "",
                  "| recipe | runs | modes (mean) | high quality (mean) | per run (modes/hq) |",
                  "| --- | --- | --- | --- | --- |", *quality]
    budgeted = summaries["own, checks by budget"]
    result = {"within5_runs": own["within5_runs"], "runs": own["runs"], "oracle_ratio_median": own["oracle_ratio_median"],
              "epochs_ratio_median": own["epochs_ratio_median"], "dominated_by_lightning": int(dominated),
              "budget_within5_runs": budgeted["within5_runs"], "budget_oracle_ratio_median": budgeted["oracle_ratio_median"]}
    title = "Early stopping: policies replayed on full-budget curves"
    publish(title if scale == 1.0 else f"{title} ({scale:g}x each recipe's budget)", lines, result, report=not args.no_report)


if __name__ == "__main__":
    main()
