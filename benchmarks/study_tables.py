"""ganstop's own study tables: trials sampled from a recipe's search space, each trained to its
full budget with no stopping and no pruning, written as a ``benchmarks/curves/`` file.

A study table is what a pruner sees in a real ``ganstop tune``: one recipe, one budget, trials
that differ only in the searched settings that change the curve (the LR decay, the EMA, the
discriminator's penalty and weight decay). The ``stopping.*`` keys of the space are left out:
with stopping off they change nothing. Trials are drawn by Optuna's ``RandomSampler`` with a
fixed seed (a table must not lean towards where TPE would have looked), each trained with the
recipe's own training seed and a check every epoch. The file is rewritten after every trial,
so a job cut short ships the trials that finished; rerunning it with the same arguments skips
them and trains only the rest. ``--jobs N`` trains N trials at once (one process and, with
``OMP_NUM_THREADS=1``, one core each); the file keeps trial order either way.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/study_tables.py --recipe ring8-mlp --trials 40 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import optuna
import torch
from _report import ROOT

from ganstop import recipe as rc
from ganstop.data.sets import load_data
from ganstop.metrics.scorer import Scorer
from ganstop.study.space import SearchSpace
from ganstop.training.loop import Trainer

CURVES = ROOT / "benchmarks" / "curves"
NO_STOPPING = [("metrics.every", 1), ("stopping.criteria", ["patience"]), ("stopping.patience", 10**6),
               ("stopping.stopping_threshold", None), ("stopping.divergence_threshold", None)]


def sample(recipe: rc.Recipe, trials: int, seed: int) -> list[dict]:
    """The first ``trials`` draws of a seeded RandomSampler over the curve-changing keys."""
    space = SearchSpace.from_recipe(recipe)
    space = SearchSpace({k: v for k, v in space.space.items() if not k.startswith("stopping.")}, space.compute_weight)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(trials):
        trial = study.ask()
        draws.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return draws


def train(name: str, params: dict) -> tuple[str, str, list[list[float]]]:
    """One trial to its budget: (metric, mode, [[epoch, value], ...]). A trial whose loss or metric
    turns non-finite ends there, as it would in ``ganstop tune``; its record is shorter."""
    recipe = rc.load(name, [*params.items(), *NO_STOPPING])
    data = load_data(recipe)
    scorer = Scorer(recipe, data, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as ckpt:
        result = Trainer(recipe, data, scorer, Path(ckpt), progress=False).fit()
    checks = [[h["epoch"], h[result.monitor]] for h in result.history if result.monitor in h]
    return result.monitor, result.mode, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="trials trained at once, one process each")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    recipe = rc.load(args.recipe)
    path = CURVES / f"ganstop-{args.recipe}.json"
    table = json.loads(path.read_text()) if path.is_file() else {"curves": {}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    table["source"] = (f"ganstop, this repository: `{command}` at commit {commit}; trials drawn by "
                       f"RandomSampler(seed={args.sampler_seed}) from the recipe's search space without its "
                       f"stopping keys, each trained to train.max_epochs={recipe.train.max_epochs} with no "
                       f"stopping and no pruning, a check every epoch")
    todo = {f"{args.recipe}/trial-{number}": params
            for number, params in enumerate(sample(recipe, args.trials, args.sampler_seed))}
    todo = {key: params for key, params in todo.items() if key not in table["curves"]}
    with ProcessPoolExecutor(args.jobs) as pool:
        jobs = {pool.submit(train, args.recipe, params): key for key, params in todo.items()}
        for job in as_completed(jobs):
            key, params = jobs[job], todo[jobs[job]]
            metric, mode, checks = job.result()
            table["curves"][key] = {"dataset": recipe.dataset.name, "metric": metric, "mode": mode,
                                    "step_unit": "epochs", "budget": recipe.train.max_epochs, "params": params,
                                    "checks": checks}
            # trial order, whichever finished first: a replay's trial orders index the file's runs
            table["curves"] = dict(sorted(table["curves"].items(), key=lambda item: int(item[0].rsplit("-", 1)[1])))
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(table))
            os.replace(tmp, path)
            best = min(v for _, v in checks) if mode == "min" else max(v for _, v in checks)
            print(f"{key}: {len(checks)} checks, best {best:.4g}", flush=True)


if __name__ == "__main__":
    main()
