"""`ganstop replay --from-study NAME --pruners median,patient,forecast`: what each pruner would
have spent on a finished study, and which trial it would have kept, training nothing.

A pruner does not change a trial before it prunes it, so a study whose trials ran to their end
(``--pruner none``) replays any pruner exactly: its trials, in the order they ran, are reported
to an in-memory Optuna study as ``ganstop tune`` reports them (each check's metric plus the
compute charge so far) and each pruner decides as it would have. Censored as the stopper replay is: a
trial that ended before its budget (its own stopper, or a pruner in the study that ran) is known
only to its last check; a pruner that has not pruned it by then is scored as letting it end there.
Time is the trial's logged ``epoch_seconds`` over the epochs it would have run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from mlflow.tracking import MlflowClient

from ganstop.errors import RecipeError
from ganstop.recipe import Recipe
from ganstop.stopping.criteria import better
from ganstop.stopping.replay import Curve
from ganstop.study.forecast_pruner import CONFIDENCE
from ganstop.study.pruners import make_pruner
from ganstop.study.replay_search import curves_from_runs
from ganstop.study.space import SearchSpace, charged

PRUNERS = ("none", "forecast", "median", "percentile", "patient", "successive-halving", "hyperband")


@dataclass
class Replayed:
    pruner: str
    epochs: int  # epochs the study would have trained
    hours: float  # their logged epoch_seconds
    best_trial: int | None  # the trial number it would have kept
    best_value: float | None  # that trial's objective


def replay_study(curves: list[tuple[int, Curve, list[float]]], pruner: str, weight: float, study_name: str,
                 confidence: float = CONFIDENCE) -> Replayed:
    """``curves``: (trial number, curve, seconds of each check's epoch) in the order the trials ran;
    ``study_name``: the replayed study's (Optuna's hyperband puts a trial in the bracket that a hash
    of the study's name and the trial's number picks); ``confidence``: the forecast pruner's, as
    ``ganstop tune --prune-confidence``."""
    mode = curves[0][1].mode
    study = optuna.create_study(study_name=study_name, direction="minimize" if mode == "min" else "maximize",
                                pruner=make_pruner(pruner, max_resource=max(c.budget for _, c, _ in curves),
                                                   confidence=confidence))
    epochs, seconds, kept = 0, 0.0, None
    for number, curve, times in curves:
        while len(study.get_trials(deepcopy=False)) < number:  # a failed trial (no curve) keeps its number
            study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
        trial, best, value, ran = study.ask(), None, None, 0
        for k, (epoch, metric, _) in enumerate(curve.checks):
            if not math.isfinite(metric):
                continue
            best = metric if best is None or better(metric, best, mode) else best
            value = charged(best, epoch, curve.budget, weight, mode)  # the objective were it to end here
            trial.report(charged(metric, epoch, curve.budget, weight, mode), epoch)
            ran = k + 1
            if epoch < curve.checks[-1][0] and trial.should_prune():
                break
        last = curve.checks[ran - 1][0] if ran else 0
        epochs += last
        seconds += sum(times[:ran])
        if ran == len(curve.checks) and value is not None:
            study.tell(trial, value)
            if kept is None or (value < kept[1] if mode == "min" else value > kept[1]):
                kept = (number, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return Replayed(pruner, epochs, seconds / 3600, *(kept or (None, None)))


def run(recipe: Recipe, study: str, pruners: list[str], quality_only: bool = False,
        confidence: float = CONFIDENCE) -> list[Replayed]:
    unknown = [p for p in pruners if p not in PRUNERS]
    if unknown:
        raise RecipeError(f"unknown pruner {unknown[0]!r} for --pruners; choose from {', '.join(PRUNERS)}")
    client = MlflowClient()
    curves = curves_from_runs(recipe, study=study, client=client)
    weight = 0.0 if quality_only else SearchSpace.from_recipe(recipe).compute_weight
    ordered = []
    for curve in curves:
        run = client.get_run(curve.name)
        times = {m.step: m.value for m in client.get_metric_history(curve.name, "epoch_seconds")}
        ordered.append((int(run.data.tags.get("ganstop.trial", -1)), curve, [times.get(e, 0.0) for e, _, _ in curve.checks]))
    ordered.sort(key=lambda item: item[0])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = ["none", *[p for p in pruners if p != "none"]]
    return [replay_study(ordered, name, weight, study, confidence) for name in names]


def describe(results: list[Replayed], study: str, confidence: float) -> str:
    """``confidence``: the one ``run`` replayed the forecast pruner at (named in the header)."""
    full = results[0]
    forecast = f"; forecast at confidence {confidence:g}" if any(r.pruner == "forecast" for r in results) else ""
    lines = [f"pruners replayed on study {study!r} ({full.epochs} epochs, {full.hours:.2f} h trained unpruned"
             + f"{forecast}):"]
    for r in results:
        kept = f"trial {r.best_trial} (objective {r.best_value:.5g})" if r.best_trial is not None else "no trial"
        lines.append(f"  {r.pruner:<20} {r.epochs:>7} epochs ({r.epochs / max(full.epochs, 1):.0%}), {r.hours:.2f} h, "
                     f"keeps {kept}{'' if r.best_trial == full.best_trial else ', not the full study best'}")
    return "\n".join(lines)
