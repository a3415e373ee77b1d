"""The pruners ``ganstop tune --pruner`` builds: ganstop's ``ForecastPruner`` (the default) and
Optuna's own, by name."""

from __future__ import annotations


import optuna

from ganstop.errors import RecipeError
from ganstop.study.forecast_pruner import CONFIDENCE, ForecastPruner


def make_pruner(name: str, *, startup_trials: int = 3, warmup_steps: int = 0, percentile: float = 25.0,
                patience: int = 2, lower: float | None = None, upper: float | None = None,
                min_resource: int = 1, reduction_factor: int = 3, max_resource: int = 100,
                confidence: float = CONFIDENCE) -> optuna.pruners.BasePruner:
    if name == "forecast":  # warm-up epochs, when asked for, replace its default warm-up share
        share = {"warmup": warmup_steps / max_resource} if 0 < warmup_steps < max_resource else {}
        return ForecastPruner(max_resource=max_resource, confidence=confidence, **share)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(percentile, n_startup_trials=startup_trials, n_warmup_steps=warmup_steps)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                              reduction_factor=reduction_factor)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)
    if name == "patient":
        return optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_steps), patience=patience)
    if name == "threshold":
        if lower is None and upper is None:
            raise RecipeError("--pruner threshold needs --prune-lower and/or --prune-upper")
        return optuna.pruners.ThresholdPruner(lower=lower, upper=upper, n_warmup_steps=warmup_steps)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise RecipeError(f"unknown pruner {name!r}")
