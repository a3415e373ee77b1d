"""`ganstop tune`: open or join a study, elect its parent run, run trials here or in workers."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import torch
from mlflow.tracking import MlflowClient

from ganstop.study import report as study_report
from ganstop.study.objective import Objective, open_study
from ganstop.study.pruners import make_pruner
from ganstop.study.space import SearchSpace, make_sampler
from ganstop.study.storage import DEFAULT_STORAGE, make_storage
from ganstop.study.tags import TAG_PARENT, TAG_ROLE
from ganstop.data.sets import load_data
from ganstop.errors import WorkersFailed
from ganstop.masking import mask
from ganstop.metrics.registry import resolve
from ganstop.recipe import Recipe
from ganstop.tracking.store import check_reachable, open_store
from ganstop.training.loop import resolve_device


def _experiment_id(name: str | None) -> str:
    if os.environ.get("MLFLOW_RUN_ID"):
        return MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
    if name:
        return mlflow.set_experiment(name).experiment_id
    return mlflow.tracking.fluent._get_experiment_id()


def _worker_commands(argv: list[str], workers: int, n_trials: int, study_name: str, storage_url: str,
                     sampler_seed: int | None) -> list[list[str]]:
    """Copies of this command, one per worker, each on its own GPU when there are enough and
    with its own sampler seed (seed + i; or none, which draws a fresh one per process)."""
    gpus = torch.cuda.device_count()
    commands = []
    for i in range(workers):
        share = n_trials // workers + (i < n_trials % workers)
        if share == 0:
            continue
        cmd = [sys.executable, "-m", "ganstop", *argv, "--workers", "1", "--n-trials", str(share),
               "--study-name", study_name, "--storage", storage_url, "--no-progress"]
        if gpus:
            cmd += ["--device", f"cuda:{i % gpus}"]
        if sampler_seed is not None:
            cmd += ["--sampler-seed", str(sampler_seed + i)]
        commands.append(cmd)
    return commands


def run_study(recipe: Recipe, *, n_trials: int, timeout: float | None, storage_url: str | None, study_name: str | None,
              pruner: str, pruner_options: dict, quality_only: bool, workers: int, heartbeat: int, grace: int,
              retries: int, sampler_seed: int | None, experiment_name: str | None, progress: bool,
              argv: list[str]) -> dict:
    space = SearchSpace.from_recipe(recipe)
    selection = resolve(recipe)
    direction = "minimize" if selection.mode == "min" else "maximize"
    pruner_obj = make_pruner(pruner, max_resource=recipe.train.max_epochs, **pruner_options)
    storage_url = storage_url or DEFAULT_STORAGE
    resolve_device(recipe.train.device)
    load_data(recipe)  # a missing dataset is the user's input, not 20 failed trials
    check_reachable()
    storage = make_storage(storage_url, heartbeat, grace, retries)
    open_store()
    name = study_name or f"{recipe.dataset.name}-{recipe.model.family}"
    sampler = make_sampler(sampler_seed)
    experiment_id = _experiment_id(experiment_name)

    client = MlflowClient()
    study, parent, created = open_study(name, storage, sampler, pruner_obj, direction, experiment_id, client)
    own = os.environ.get("MLFLOW_RUN_ID")
    if own and own != parent:  # a second `mlflow run -e tune`: its run is a worker under the parent
        client.set_tag(own, TAG_ROLE, "worker")
        client.set_tag(own, TAG_PARENT, parent)
    experiment_id = client.get_run(parent).info.experiment_id

    owned = created and not own  # `mlflow run` ends its own run; a parent we made, we end
    status = "FAILED"
    try:
        if workers > 1:
            _run_workers(_worker_commands(argv, workers, n_trials, name, storage_url, sampler_seed), experiment_id)
        else:
            objective = Objective(recipe, space, selection.monitor, selection.mode, parent, experiment_id,
                                         name, quality_only=quality_only, client=client)
            study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                           show_progress_bar=progress)
        summary = study_report.publish(study, parent, selection.monitor, selection.mode, client)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if owned:
            client.set_terminated(parent, status)
    summary.update(study=name, storage=mask(storage_url), parent_run_id=parent, metric=selection.monitor)
    return summary


def _run_workers(commands: list[list[str]], experiment_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env["MLFLOW_EXPERIMENT_ID"] = experiment_id
    procs = [subprocess.Popen(cmd, env=env) for cmd in commands]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise WorkersFailed(f"{sum(c != 0 for c in codes)} of {len(codes)} workers failed (exit codes {codes}); "
                            f"their errors are above, and the study keeps what they finished")


def describe(summary: dict) -> str:
    lines = [f"study {summary['study']} ({summary['storage']}), parent run {summary['parent_run_id']}: "
             f"{summary['n_trials']} trials, {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
             f"{summary['n_failed']} failed, {summary['total_epochs']} epochs"]
    best = summary.get("best")
    if best:
        lines.append(f"best trial {best['number']}: objective {best['value']:.5g} ({summary['metric']} "
                     f"{best['best_metric']:.5g} after {best['epochs']} epochs), run {best['run_id']}")
        lines += [f"  {key} = {value}" for key, value in best["params"].items()]
    else:
        lines.append("no trial completed yet")
    return "\n".join(lines)


