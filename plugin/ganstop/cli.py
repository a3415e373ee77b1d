"""`ganstop` command line: parse, call, report. Bad input is one line on stderr and exit 2."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time

import click
from click.core import ParameterSource

from ganstop import recipe as rc
from ganstop.errors import GanstopError
from ganstop.masking import mask
from ganstop.errors import RecipeError

PRUNERS = ("forecast", "median", "percentile", "hyperband", "successive-halving", "patient", "threshold", "none")

DEFAULT_RECIPE = "digits-dcgan"
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class Blank(click.ParamType):
    """A typed option where an empty string means "not set" (MLproject defaults are strings)."""

    def __init__(self, inner: click.ParamType):
        self.inner, self.name = inner, inner.name

    def convert(self, value, param, ctx):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return self.inner.convert(value, param, ctx)


SHORTCUTS = {  # CLI flag -> recipe key
    "patience": "stopping.patience",
    "min_delta": "stopping.min_delta",
    "max_epochs": "train.max_epochs",
    "seed": "train.seed",
    "device": "train.device",
}


OVERRIDE_START = re.compile(r"\s+(?=[A-Za-z_]+\.[A-Za-z_]+=)")  # "a.b=1 c.d=[x, y]" -> two overrides


def recipe_options(command):
    """--recipe, --set and the shortcut flags, turned into one ``recipe`` argument."""

    @click.option("--recipe", "recipe_path", default=DEFAULT_RECIPE, show_default=True,
                  help="Recipe YAML path or shipped recipe name; its keys override the documented defaults.")
    @click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                  help="Override one recipe value; repeatable. Space-separated pairs in one value work too.")
    @click.option("--patience", type=Blank(click.INT), help="stopping.patience: also stop after N epochs without improvement (Keras/Lightning).")
    @click.option("--min-delta", type=Blank(click.STRING), help="stopping.min_delta: a number, or auto (1 standard error).")
    @click.option("--max-epochs", type=Blank(click.INT), help="train.max_epochs.")
    @click.option("--seed", type=Blank(click.INT), help="train.seed.")
    @click.option("--device", type=Blank(click.STRING), help="train.device: auto, cpu, cuda or cuda:N.")
    @functools.wraps(command)
    def wrapper(recipe_path, overrides, **kwargs):
        pairs = [rc.parse_override(item) for value in overrides for item in OVERRIDE_START.split(value.strip()) if item]
        pairs += [(key, kwargs.pop(flag)) for flag, key in SHORTCUTS.items() if kwargs.get(flag) is not None]
        for flag in SHORTCUTS:
            kwargs.pop(flag, None)
        return command(recipe=rc.load(recipe_path, pairs), **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-ganstop")
def cli() -> None:
    """Train GANs that stop on sample quality, tracked in MLflow."""


@cli.command()
@recipe_options
@click.option("--experiment-name", type=Blank(click.STRING), help="MLflow experiment (created if missing).")
@click.option("--run-name", type=Blank(click.STRING), help="MLflow run name.")
@click.option("--progress/--no-progress", default=True, help="Show the epoch progress bar.")
@click.option("--resume", "resume_run", type=Blank(click.STRING), metavar="RUN_ID",
              help="Continue a killed run from its last checkpoint, with the recipe it logged.")
@click.option("--nproc", type=Blank(click.IntRange(min=1)), default="1", show_default=True,
              help="Processes (one per GPU) training this one run data-parallel, started by torchrun's "
                   "elastic agent; train.batch_size is the global batch. Several machines: see README.")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --nproc: restart the group after a failure this many times, from the last checkpoint.")
def train(recipe, experiment_name, run_name, progress, resume_run, nproc, max_restarts) -> None:
    """Train one GAN, stop on held-out sample quality, log the best-epoch generator."""
    from ganstop.training import distributed

    if nproc > 1 and not distributed.launched():
        from ganstop.tracking import launch

        launch.train(recipe, nproc, max_restarts, experiment_name, run_name, resume_run, _ARGV)
    else:
        _train(recipe, experiment_name, run_name, progress, resume_run)


def _train(recipe, experiment_name, run_name, progress, resume_run) -> None:
    """One process of the run: the only one, or one rank under torchrun (rank 0 tracks)."""
    import mlflow

    from ganstop.training import distributed
    from ganstop.tracking import runner
    from ganstop.tracking.store import check_reachable

    runner.join(recipe)
    if distributed.is_main():
        check_reachable()
        if resume_run:
            recipe = runner.resumable(resume_run, distributed.world_size())
    recipe = distributed.broadcast(recipe)
    prepared = runner.prepare(recipe)
    if not distributed.is_main():
        runner.train_in_run(prepared, distributed.broadcast(None), progress=False)
        distributed.leave()
        return
    with distributed.failing_on_sigterm(), runner.start_run(experiment_name, run_name, resume_run) as run:
        try:
            result, logger = runner.train_in_run(prepared, distributed.broadcast(run.info.run_id), progress=progress)
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")  # not FAILED: the user stopped it, and it can be resumed
            raise
    distributed.leave()
    click.echo(runner.summary(result, run.info.run_id, logger.model_uri))


@cli.command()
@recipe_options
@click.option("--n-trials", type=Blank(click.IntRange(min=1)), default="20", show_default=True,
              help="Trials this command runs (split over --workers).")
@click.option("--timeout", type=Blank(click.FloatRange(min=0, min_open=True)), help="Stop starting trials after this many seconds.")
@click.option("--storage", envvar="GANSTOP_STORAGE", type=Blank(click.STRING),
              help="Optuna RDB storage URL (default sqlite:///optuna.db); env GANSTOP_STORAGE.")
@click.option("--study-name", type=Blank(click.STRING), help="Study to create or join (default: dataset-family).")
@click.option("--pruner", type=click.Choice(PRUNERS), default="forecast", show_default=True,
              help="forecast: prune a trial once it is unlikely to beat the best completed one by the end of its "
                   "budget (ganstop.ForecastPruner); the others are Optuna's.")
@click.option("--prune-confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="forecast: prune below this chance of beating the best completed trial.")
@click.option("--prune-startup-trials", type=click.IntRange(min=0), default=3, show_default=True,
              help="median/percentile/patient: trials before pruning starts.")
@click.option("--prune-warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="median/percentile/patient/threshold/forecast: epochs before a trial can be pruned "
                   "(forecast: 0 means its default, a tenth of the budget).")
@click.option("--prune-percentile", type=click.FloatRange(0, 100), default=25.0, show_default=True)
@click.option("--prune-patience", type=click.IntRange(min=0), default=2, show_default=True, help="patient pruner.")
@click.option("--prune-lower", type=Blank(click.FLOAT), help="threshold pruner: prune below this.")
@click.option("--prune-upper", type=Blank(click.FLOAT), help="threshold pruner: prune above this.")
@click.option("--min-resource", type=click.IntRange(min=1), default=1, show_default=True,
              help="hyperband/successive-halving: epochs of the first rung.")
@click.option("--reduction-factor", type=click.IntRange(min=2), default=3, show_default=True)
@click.option("--objective", type=click.Choice(["compute", "quality"]), default="compute", show_default=True,
              help="compute: best metric plus search.compute_weight x share of the epoch budget spent.")
@click.option("--workers", type=Blank(click.IntRange(min=1)), default="1", show_default=True,
              help="Worker processes on this machine (one per GPU when there are GPUs).")
@click.option("--heartbeat", type=click.IntRange(min=1), default=10, show_default=True,
              help="Seconds between trial heartbeats.")
@click.option("--grace", type=click.IntRange(min=1), default=30, show_default=True,
              help="Seconds without a heartbeat before a trial counts as dead.")
@click.option("--retry-failed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Re-run a dead worker's trial up to this many times.")
@click.option("--sampler-seed", type=Blank(click.INT),
              help="TPE sampler seed (default: fresh per process, so no two workers draw the same trials); "
                   "worker i of --workers gets seed + i. Independent of the training seed (--seed).")
@click.option("--experiment-name", type=Blank(click.STRING), help="MLflow experiment of the study run.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar over trials.")
@click.option("--nproc", type=Blank(click.IntRange(min=1)), default="1", show_default=True,
              help="Processes (one per GPU) training each trial data-parallel, under torchrun's elastic agent.")
def tune(recipe, n_trials, timeout, storage, study_name, pruner, prune_confidence, prune_startup_trials, prune_warmup_epochs,
         prune_percentile, prune_patience, prune_lower, prune_upper, min_resource, reduction_factor, objective,
         workers, heartbeat, grace, retry_failed, sampler_seed, experiment_name, progress, nproc) -> None:
    """Search stopping and decay parameters with Optuna; one nested MLflow run per trial."""
    from ganstop.study import runner as study_runner
    from ganstop.study.objective import follow
    from ganstop.study.space import SearchSpace
    from ganstop.training import distributed

    if nproc > 1 and (workers or 1) > 1:
        raise click.UsageError("--nproc trains each trial on several processes, --workers runs several trials at "
                               "once: use one of them")
    if nproc > 1 and not distributed.launched():
        from ganstop.tracking import launch

        SearchSpace.from_recipe(recipe)
        launch.check(recipe, nproc)
        launch.spawn(nproc, 0, _ARGV)
        return
    if distributed.launched():
        from ganstop.tracking import runner

        runner.join(recipe)
        if not distributed.is_main():  # rank 0 runs the study; the others train its trials beside it
            follow(recipe)
            distributed.leave()
            return
    pruner_options = dict(startup_trials=prune_startup_trials, warmup_steps=prune_warmup_epochs,
                          percentile=prune_percentile, patience=prune_patience, lower=prune_lower,
                          upper=prune_upper, min_resource=min_resource, reduction_factor=reduction_factor,
                          confidence=prune_confidence)
    summary = study_runner.run_study(
        recipe, n_trials=n_trials or 20, timeout=timeout, storage_url=storage, study_name=study_name,
        pruner=pruner, pruner_options=pruner_options, quality_only=objective == "quality", workers=workers or 1,
        heartbeat=heartbeat, grace=grace, retries=retry_failed, sampler_seed=sampler_seed,
        experiment_name=experiment_name, progress=progress, argv=_ARGV)
    distributed.broadcast(None)  # `tune --nproc`: the study is done, and so are the other ranks
    distributed.leave()
    click.echo(study_runner.describe(summary))


@cli.command()
@recipe_options
@click.option("--from-experiment", type=Blank(click.STRING), help="Replay every finished run of this MLflow experiment ...")
@click.option("--from-study", type=Blank(click.STRING), help="... or every trial run of this study ...")
@click.option("--from-run", "run_ids", multiple=True, metavar="RUN_ID", help="... or these runs (repeatable).")
@click.option("--n-trials", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Stopping settings to replay (each replays every curve; nothing trains).")
@click.option("--sampler-seed", type=Blank(click.INT), help="TPE sampler seed (default: fresh).")
@click.option("--objective", type=click.Choice(["compute", "quality"]), default="compute", show_default=True,
              help="compute: best metric plus search.compute_weight x share of the budget, as ganstop tune.")
@click.option("--experiment-name", type=Blank(click.STRING),
              help="MLflow experiment of the replay run (default: the one replayed, else the active one).")
@click.option("--pruners", type=Blank(click.STRING), metavar="NAME,NAME",
              help="With --from-study: replay these pruners (forecast, median, percentile, patient, "
                   "successive-halving, hyperband) on the study's trials instead, and show what each would "
                   "have spent and which trial it would have kept.")
@click.option("--prune-confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="With --pruners forecast: its confidence, as ganstop tune's.")
def replay(recipe, from_experiment, from_study, run_ids, n_trials, sampler_seed, objective, experiment_name,
           pruners, prune_confidence) -> None:
    """Search the recipe's stopping.* space on finished runs' logged curves, or replay pruners on a
    finished study; training nothing."""
    from ganstop.study import replay_search
    from ganstop.tracking.store import check_reachable

    if not (from_experiment or from_study or run_ids):
        raise click.UsageError("name the curves to replay: --from-experiment, --from-study or --from-run")
    source = click.get_current_context().get_parameter_source("prune_confidence")
    confidence_given = source is not ParameterSource.DEFAULT
    if not pruners and confidence_given:
        raise click.UsageError("--prune-confidence is the forecast pruner's: replay it with --pruners forecast")
    if pruners:
        from ganstop.study import replay_pruners

        if not from_study:
            raise click.UsageError("--pruners replays a study: name it with --from-study")
        check_reachable()
        names = [p.strip() for p in pruners.split(",") if p.strip()]
        results = replay_pruners.run(recipe, from_study, names, objective == "quality", prune_confidence)
        click.echo(replay_pruners.describe(results, from_study, prune_confidence))
        return
    check_reachable()
    found = replay_search.run(recipe, experiment=from_experiment, study=from_study, run_ids=tuple(run_ids),
                              n_trials=n_trials, sampler_seed=sampler_seed, quality_only=objective == "quality",
                              experiment_name=experiment_name)
    click.echo(replay_search.describe(found))


@cli.command()
@click.option("--older-than", type=click.FloatRange(min=0), default=7.0, show_default=True,
              help="Remove run checkpoint folders untouched for this many days.")
@click.option("--dry-run", is_flag=True, help="List what would be removed, remove nothing.")
def gc(older_than, dry_run) -> None:
    """Remove old runs' checkpoints from the local cache ($GANSTOP_CACHE/checkpoints)."""
    from ganstop.training import checkpoint
    from ganstop.paths import cache_root

    removed = checkpoint.collect_garbage(cache_root() / "checkpoints", older_than, dry_run)
    for folder, size in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {folder} ({size / 2**20:.1f} MiB)")
    total = sum(size for _, size in removed) / 2**20
    click.echo(f"{len(removed)} run folder(s), {total:.1f} MiB{' (dry run)' if dry_run else ''}")


@cli.command(name="plugins")
def list_plugins() -> None:
    """List the installed model families, data sets and losses, with their entry points."""
    from ganstop import plugins

    for group in plugins.KINDS:
        click.echo(f"ganstop.{group}:")
        for name, entry in sorted(plugins.installed(group).items()):
            click.echo(f"  {name:<16} {entry.value}")


@cli.command()
@click.option("--model-name", required=True, help="Registered model to promote into.")
@click.option("--study-name", type=Blank(click.STRING), help="Promote this study's best completed trial ...")
@click.option("--storage", envvar="GANSTOP_STORAGE", type=Blank(click.STRING), help="... kept in this storage.")
@click.option("--run-id", type=Blank(click.STRING), help="... or this run's generator.")
@click.option("--n-samples", type=Blank(click.IntRange(min=2)), help="Samples per model (default: held-out size).")
@click.option("--seed", type=Blank(click.INT), default="0", show_default=True, help="Latent seed, shared by both models.")
@click.option("--dry-run", is_flag=True, help="Print the decision, change nothing.")
@click.option("--metric", type=Blank(click.STRING),
              help="Compare on this metric (default: the one the model was promoted on before, else fid for "
                   "images and mode_error for 2D).")
def promote(model_name, study_name, storage, run_id, n_samples, seed, dry_run, metric) -> None:
    """Register a generator; make it @champion only if it beats the current one on the test split."""
    from ganstop.study import promote as promote_mod

    decision = promote_mod.promote(model_name, run_id=run_id, study_name=study_name, storage=storage,
                                   dry_run=dry_run, n_samples=n_samples, seed=seed or 0, metric=metric)
    click.echo(decision.describe(dry_run))


@cli.command()
@click.option("--model-uri", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., a path.")
@click.option("--n", type=click.IntRange(min=1), default=64, show_default=True, help="How many samples.")
@click.option("--seed", type=click.INT, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default="samples.png", show_default=True)
@click.option("--out-npy", type=Blank(click.Path(dir_okay=False)), help="Also save the raw samples (.npy).")
def generate(model_uri, n, seed, out, out_npy) -> None:
    """Write a grid (or 2D scatter) of samples from a logged or registered generator."""
    from pathlib import Path

    from ganstop.tracking.generate import generate as run_generate

    samples = run_generate(model_uri, n, seed, Path(out), Path(out_npy) if out_npy else None)
    click.echo(f"{len(samples)} samples of shape {tuple(samples.shape[1:])} from {model_uri} -> {out}"
               + (f", {out_npy}" if out_npy else ""))


def _discard_mlflow_run() -> None:
    """`mlflow run` created a run before we saw the input: remove it so nothing is left behind.

    `mlflow run` marks the run FAILED after we exit and crashes if it is already deleted (its
    terminated-status check compares a string to ints), so a detached helper waits for that
    and deletes the run then.
    """
    from ganstop.training import distributed

    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id and not distributed.launched():  # a worker's run belongs to its launcher
        subprocess.Popen([sys.executable, "-c", f"from ganstop.cli import reap; reap({run_id!r})"],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def reap(run_id: str, timeout: float = 60.0) -> None:
    """Delete ``run_id`` once its launcher has marked it terminated (or after ``timeout``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    deadline = time.monotonic() + timeout
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    client.delete_run(run_id)


_ARGV: list[str] = []  # this command line, for `tune --workers` to start copies of itself


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's errors and ours become one line, never a traceback."""
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=argv, prog_name="ganstop", standalone_mode=False)
    except (click.ClickException, RecipeError) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        _discard_mlflow_run()
        click.echo(f"ganstop: error: {mask(message)}", err=True)
        sys.exit(EXIT_USAGE)
    except GanstopError as exc:
        click.echo(f"ganstop: error: {exc}", err=True)
        sys.exit(1)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("ganstop: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
