"""Early stopping vs a fixed budget, side by side in one training run per seed.

Each run trains to max_epochs with stopping disabled and records the monitored metric at every
epoch; the recipe's stopper is then replayed on that exact sequence. The replay is exact:
validation runs under its own RNG, so stopping or not never changes the training trajectory.
Goal: <= 40% of the epochs and a best metric within 2% of the best ever seen in the fixed run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from _report import write

from ganstop import recipe as rc
from ganstop.data import load_data
from ganstop.metrics.registry import Evaluator, resolve
from ganstop.stopping import EarlyStopper
from ganstop.train import Trainer


def fixed_budget(recipe: rc.Recipe) -> list[float]:
    data = load_data(recipe)
    evaluator = Evaluator(recipe, data, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(recipe, data, evaluator, Path(ckpt), progress=False)
        result = trainer.fit()
    return [h[result.monitor] for h in result.history]


def replay(recipe: rc.Recipe, mode: str, values: list[float]) -> tuple[int, float]:
    """Where the recipe's stopper stops on this metric sequence, and the best value it keeps."""
    st = recipe.stopping
    stopper = EarlyStopper(mode=mode, patience=st.patience, min_delta=st.min_delta, min_delta_mode=st.min_delta_mode,
                           warmup=st.warmup, baseline=st.baseline, stopping_threshold=st.stopping_threshold,
                           divergence_threshold=st.divergence_threshold, cumulative_delta=st.cumulative_delta)
    for epoch, value in enumerate(values, start=1):
        if stopper.update(epoch, value).stop:
            break
    return stopper.stopped_epoch or len(values), stopper.best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=["digits-dcgan", "ring8-mlp", "grid25-mlp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed, 20k points, 40% of max_epochs")
    args = parser.parse_args()
    rows, epoch_ratios, quality_gaps = [], [], []
    for name in args.recipes:
        for seed in ([0] if args.quick else args.seeds):
            base = rc.load(name)
            overrides = [("train.seed", seed)]
            if args.quick:
                overrides += [("dataset.n_train", 20_000), ("train.max_epochs", max(base.stopping.warmup + 2,
                                                                                      int(base.train.max_epochs * 0.4)))]
            recipe = rc.load(name, overrides)
            budget = recipe.train.max_epochs
            running = rc.load(name, overrides + [("stopping.patience", 10 * budget)])
            mode = resolve(recipe).mode
            values = fixed_budget(running)
            best_ever = min(values) if mode == "min" else max(values)
            stop_epoch, kept = replay(recipe, mode, values)
            gap = (kept - best_ever) / abs(best_ever) if mode == "min" else (best_ever - kept) / abs(best_ever)
            epoch_ratios.append(stop_epoch / budget)
            quality_gaps.append(gap)
            rows.append(f"| {name} | {seed} | {budget} | {stop_epoch} | {stop_epoch / budget:.0%} | "
                        f"{best_ever:.4g} | {kept:.4g} | {gap:+.1%} |")
    lines = ["| recipe | seed | fixed epochs | stopped at | epochs used | best ever (fixed) | best kept (stopped) "
             "| gap |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
             "gap: how much worse the early-stopped run's best is than the best the fixed run ever saw."]
    result = {"epochs_ratio_median": statistics.median(epoch_ratios), "epochs_ratio_max": max(epoch_ratios),
              "quality_gap_median": statistics.median(quality_gaps), "quality_gap_max": max(quality_gaps)}
    print("\n".join(lines))
    print(write("Early stopping vs a fixed budget", lines, result))


if __name__ == "__main__":
    main()
