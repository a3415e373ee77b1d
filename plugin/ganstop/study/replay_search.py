"""`ganstop replay`: search the stopping section on finished runs' curves, training nothing.

A stopping rule does not change training before its stop, so every setting of the recipe's
``stopping.*`` search space can be scored exactly on logged ``<monitor>`` histories. Each Optuna
trial replays every curve (``ganstop.stopping.replay``) and returns the objective ``ganstop tune`` uses,
averaged over the curves: the best value kept plus ``search.compute_weight`` x the share of the
budget spent. Runs that their own stopper (or a pruner) ended early are censored: see
``ganstop.stopping.replay``. The study is logged as one MLflow run with the best stopping section as a
recipe snippet, the trials table and the compute-against-quality Pareto plot.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ganstop import recipe as rc
from ganstop.errors import RecipeError
from ganstop.metrics.registry import resolve
from ganstop.training.optim import annealed_epoch
from ganstop.recipe import Recipe
from ganstop.stopping.replay import Curve, Outcome, replay, summarize
from ganstop.study.tags import TAG_ROLE, TAG_STUDY
from ganstop.study.space import SearchSpace, make_sampler


@dataclass
class Searched:
    study: optuna.Study
    curves: list[Curve]
    best: dict  # the best trial's stopping values, by recipe key
    summary: dict[str, float]  # replay.summarize of the best trial
    weight: float  # the recipe's search.compute_weight, which the objective charges
    run_id: str | None = None


def curves_from_runs(recipe: Recipe, experiment: str | None = None, study: str | None = None,
                     run_ids: tuple[str, ...] = (), client: MlflowClient | None = None) -> list[Curve]:
    """The recipe's monitored metric, with its ``_se`` when logged, of finished runs: every run
    of an experiment, every trial of a study, or the runs named. Each run's budget is its logged
    ``train.max_epochs``; a curve that ends before it is censored."""
    client = client or MlflowClient()
    selection = resolve(recipe)
    runs = []
    for run_id in run_ids:
        try:
            runs.append(client.get_run(run_id))
        except MlflowException:
            raise RecipeError(f"no MLflow run {run_id!r} in the tracking store") from None
    if experiment or study:
        found = client.get_experiment_by_name(experiment) if experiment else None
        if experiment and found is None:
            raise RecipeError(f"no MLflow experiment named {experiment!r}")
        ids = [found.experiment_id] if found else [e.experiment_id for e in client.search_experiments()]
        where = f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_ROLE}` = 'trial'" if study else ""
        runs += client.search_runs(ids, where, max_results=50000)
    curves = []
    for run in runs:
        if run.info.status == "RUNNING" or "train.max_epochs" not in run.data.params:
            continue
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, selection.monitor)}
        errors = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"{selection.monitor}_se")}
        if not history:
            continue
        budget = int(run.data.params["train.max_epochs"])
        checks = [(epoch, history[epoch], errors.get(epoch)) for epoch in sorted(history)]
        curves.append(Curve(run.info.run_id, checks, budget, run.data.params.get("mode", selection.mode),
                            censored=checks[-1][0] < budget, annealed_at=_annealed_at(recipe, run.data.params, budget)))
    if not curves:
        where = f"study {study!r}" if study else f"experiment {experiment!r}" if experiment else "the runs given"
        raise RecipeError(f"no finished run in {where} logged {selection.monitor} with train.max_epochs; "
                          f"replay needs the curves of finished ganstop runs")
    return curves


def _annealed_at(recipe: Recipe, params: dict[str, str], budget: int) -> int | None:
    """When the run's own LR schedule (its logged ``decay.*``, a study's trials differ) had
    annealed: the forecast replays as it ran."""
    logged = {key.split(".", 1)[1]: value for key, value in params.items() if key.startswith("decay.")}
    return annealed_epoch(rc.DecayConfig.model_validate({**recipe.decay.model_dump(), **logged}), budget)


def objective_of(outcomes: list[Outcome], curves: list[Curve], weight: float, quality_only: bool) -> float:
    """``ganstop tune``'s objective, averaged over the curves."""
    values = []
    for outcome, curve in zip(outcomes, curves):
        charge = 0.0 if quality_only else weight * outcome.share
        values.append(outcome.best + charge if curve.mode == "min" else outcome.best - charge)
    return statistics.fmean(values)


def search(curves: list[Curve], recipe: Recipe, n_trials: int, sampler_seed: int | None = None,
           quality_only: bool = False) -> Searched:
    """An in-memory Optuna study over the recipe's ``stopping.*`` space, replaying every curve."""
    space = SearchSpace.from_recipe(recipe)
    stopping = {key: dist for key, dist in space.space.items() if key.startswith("stopping.")}
    if not stopping:
        raise RecipeError("the recipe's search.space has no stopping.* key to search by replay")
    space = SearchSpace(stopping, space.compute_weight)
    direction = "minimize" if curves[0].mode == "min" else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a thousand "trial finished" lines say nothing
    study = optuna.create_study(direction=direction, sampler=make_sampler(sampler_seed))
    study.enqueue_trial({key: _value_of(recipe, key) for key in stopping if _fits(stopping[key], _value_of(recipe, key))})

    def trial_value(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        config = rc.load(None, list(values.items()), base=recipe).stopping
        outcomes = [replay(curve, config) for curve in curves]
        scores = summarize(outcomes)
        trial.set_user_attr("compute_mean", scores["compute_mean"])
        trial.set_user_attr("gap_mean", statistics.fmean(o.gap for o in outcomes))
        trial.set_user_attr("within5", scores["within5"])
        trial.set_user_attr("cut_at_censoring", sum(o.censored for o in outcomes))
        return objective_of(outcomes, curves, space.compute_weight, quality_only)

    study.optimize(trial_value, n_trials=n_trials)
    best = dict(study.best_trial.params)
    config = rc.load(None, list(best.items()), base=recipe).stopping
    return Searched(study, curves, best, summarize([replay(curve, config) for curve in curves]), space.compute_weight)


def _value_of(recipe: Recipe, key: str):
    section, name = key.split(".", 1)
    return getattr(getattr(recipe, section), name)


def _fits(dist: dict, value) -> bool:
    """Whether the recipe's own value lies in the distribution (then it is the first trial)."""
    if dist["type"] == "categorical":
        return value in dist["choices"]
    return isinstance(value, (int, float)) and dist["low"] <= value <= dist["high"]


def snippet(best: dict) -> str:
    """The best stopping values as the recipe lines to paste."""
    return yaml.safe_dump({"stopping": {key.split(".", 1)[1]: value for key, value in best.items()}}, sort_keys=False)


def pareto_figure(study: optuna.Study):
    """Mean share of the budget used against mean quality gap, per trial; the front in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((t.user_attrs["compute_mean"], t.user_attrs["gap_mean"]) for t in study.trials
                    if t.state == optuna.trial.TrialState.COMPLETE)
    front, low = [], float("inf")
    for compute, gap in points:
        if gap < low:
            front.append((compute, gap))
            low = gap
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([p[0] for p in points], [100 * p[1] for p in points], s=8, alpha=0.5, label="trials")
    ax.step([p[0] for p in front], [100 * p[1] for p in front], where="post", color="red", label="Pareto front")
    ax.set_xlabel("mean share of the budget used")
    ax.set_ylabel("mean gap to the best ever (%)")
    ax.set_title("stopping settings replayed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(recipe: Recipe, *, experiment: str | None, study: str | None, run_ids: tuple[str, ...], n_trials: int,
        sampler_seed: int | None, quality_only: bool, experiment_name: str | None) -> Searched:
    """Collect the curves, search, and log the search as one MLflow run."""
    client = MlflowClient()
    curves = curves_from_runs(recipe, experiment, study, run_ids, client)
    found = search(curves, recipe, n_trials, sampler_seed, quality_only)
    if experiment_name:
        mlflow.set_experiment(experiment_name)
    elif experiment:
        mlflow.set_experiment(experiment)
    default = [replay(curve, recipe.stopping) for curve in curves]
    with mlflow.start_run(run_name=f"replay-{study or experiment or 'runs'}", tags={TAG_ROLE: "replay"}) as active:
        mlflow.log_params({"n_trials": n_trials, "n_curves": len(curves), "n_censored": sum(c.censored for c in curves),
                           "source": study and f"study {study}" or experiment and f"experiment {experiment}" or "run ids",
                           "objective": "quality" if quality_only else "compute", "sampler_seed": sampler_seed})
        mlflow.log_metrics({"best_value": found.study.best_value,
                            "recipe_value": objective_of(default, curves, found.weight, quality_only),
                            "best_within5": found.summary["within5"], "best_compute_mean": found.summary["compute_mean"]})
        mlflow.set_tag("ganstop.best_stopping", snippet(found.best))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "stopping.yaml").write_text(snippet(found.best))
            found.study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
            figure = pareto_figure(found.study)
            figure.savefig(folder / "pareto.png", dpi=110)
            mlflow.log_artifacts(str(folder), artifact_path="replay")
        found.run_id = active.info.run_id
    return found


def describe(found: Searched) -> str:
    s = found.summary
    return (f"replayed {len(found.study.trials)} stopping settings on {len(found.curves)} curves "
            f"({sum(c.censored for c in found.curves)} censored): best objective {found.study.best_value:.4g}, "
            f"{s['within5']}/{s['runs']} within 5% of their best at {s['compute_mean']:.0%} of the budget on mean; "
            f"run {found.run_id}\n{snippet(found.best)}")
