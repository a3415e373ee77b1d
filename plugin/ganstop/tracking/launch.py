"""`ganstop train --nproc N`: one run on N processes of this machine, started by torchrun's
elastic agent (``torch.distributed.run``), as ``torchrun --standalone --nproc-per-node N -m
ganstop train ...`` would.

Before anything starts, the launcher checks what a worker would reject (the recipe, the device,
the data set, the metrics, the split of the global batch, the tracking store, a resume on
another world size) and opens the MLflow run, so bad input leaves nothing behind and every
worker, restarted ones included (``--max-restarts``), joins that one run through MLFLOW_RUN_ID
and resumes from its checkpoint. A group that fails ends the command with one line and the run
FAILED. Several machines go through torchrun itself (docs/scaling.md).
"""

from __future__ import annotations

import logging
import os

import mlflow
import torch

from ganstop.tracking import runner
from ganstop.data.sets import load_data
from ganstop.errors import GanstopError, RecipeError
from ganstop.metrics.registry import resolve
from ganstop.recipe import Recipe
from ganstop.tracking.store import check_reachable
from ganstop.training.loop import resolve_device

LAUNCHER_ONLY = {"--nproc": 1, "--max-restarts": 1}  # options the workers must not see, with their arity


def worker_argv(argv: list[str]) -> list[str]:
    """The command line each worker runs: this one without the launcher's own options."""
    out, skip = [], 0
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip -= 1
        elif name in LAUNCHER_ONLY:
            skip = 0 if "=" in arg else LAUNCHER_ONLY[name]
        else:
            out.append(arg)
    return out


def check(recipe: Recipe, nproc: int) -> None:
    """What a worker would reject, found before any process or run exists."""
    device = resolve_device(recipe.train.device)
    if device.type == "cuda" and torch.cuda.device_count() < nproc:
        raise RecipeError(f"--nproc {nproc} needs {nproc} GPUs, and {torch.cuda.device_count()} are visible; "
                          "use fewer processes or train.device=cpu")
    runner.check_batch_split(recipe, nproc)
    resolve(recipe)
    load_data(recipe)


def spawn(nproc: int, max_restarts: int, argv: list[str]) -> None:
    """``python -m ganstop <argv>`` on ``nproc`` processes under torchrun's elastic agent, here;
    a failed group raises GanstopError naming the first rank that failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run as torchrun

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the failure is our one line
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
                                         "-m", "ganstop", *worker_argv(argv)])
    try:
        torchrun(args)
    except SignalException as exc:  # the agent ended its workers on our SIGTERM
        raise GanstopError(f"stopped by signal {exc.sigval.name}") from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise GanstopError(f"the data-parallel {argv[0]} failed: rank {rank} exited with code {failure.exitcode} "
                           "(its error is above)") from None


def train(recipe: Recipe, nproc: int, max_restarts: int, experiment_name: str | None, run_name: str | None,
          resume_run: str | None, argv: list[str]) -> None:
    check_reachable()
    if resume_run:
        recipe = runner.resumable(resume_run, nproc)
    check(recipe, nproc)
    with runner.start_run(experiment_name, run_name, resume_run, system_metrics=False) as run:
        os.environ["MLFLOW_RUN_ID"] = run.info.run_id  # every worker and every restart joins this run
        try:
            spawn(nproc, max_restarts, argv)
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")  # as a one-process run: the user stopped it, and it can be resumed
            raise
        except GanstopError as exc:
            raise GanstopError(f"{exc}; run {run.info.run_id} is FAILED") from None
