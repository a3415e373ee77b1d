"""The search space of a recipe's ``search:`` section, and the sampler that draws from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from ganstop import recipe as rc
from ganstop.errors import RecipeError
from ganstop.recipe import Recipe

DISTRIBUTION_KEYS = {"int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"},
                     "categorical": {"choices"}}


def charged(value: float, epochs: int, budget: int, weight: float, mode: str) -> float:
    """``value`` charged ``weight`` metric units (``compute_weight``) for using the whole ``budget``
    of epochs: the study's objective, one formula for live trials and replayed ones."""
    charge = weight * epochs / budget
    return value + charge if mode == "min" else value - charge


@dataclass
class SearchSpace:
    """``search: {compute_weight: w, space: {section.key: distribution}}`` from a recipe."""

    space: dict[str, dict[str, Any]]
    compute_weight: float = 0.0  # metric units charged for spending the whole epoch budget

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> "SearchSpace":
        section = dict(recipe.search)
        if not section.get("space"):
            raise RecipeError("the recipe has no search.space to search; add distributions under search.space")
        unknown = set(section) - {"space", "compute_weight"}
        if unknown:
            raise RecipeError(f"unknown search key {sorted(unknown)[0]!r}; search holds space and compute_weight")
        weight = section.get("compute_weight", 0.0)
        if not isinstance(weight, (int, float)) or weight < 0:
            raise RecipeError(f"search.compute_weight must be a number >= 0, not {weight!r}")
        space = section["space"]
        if not isinstance(space, dict):
            raise RecipeError("search.space must map section.key to a distribution")
        for key, dist in space.items():
            _check_distribution(recipe, key, dist)
        return cls(space, float(weight))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        values = {}
        for key, dist in self.space.items():
            kind = dist["type"]
            if kind == "categorical":
                values[key] = trial.suggest_categorical(key, dist["choices"])
            elif kind == "int":
                values[key] = trial.suggest_int(key, dist["low"], dist["high"], step=dist.get("step", 1),
                                                log=dist.get("log", False))
            else:
                values[key] = trial.suggest_float(key, dist["low"], dist["high"], step=dist.get("step"),
                                                  log=dist.get("log", False))
        return values


def _check_distribution(recipe: Recipe, key: str, dist: Any) -> None:
    where = f"search.space.{key}"
    if not isinstance(dist, dict) or dist.get("type") not in DISTRIBUTION_KEYS:
        raise RecipeError(f"{where} must be a mapping with type int, float or categorical")
    extra = set(dist) - DISTRIBUTION_KEYS[dist["type"]] - {"type"}
    if extra:
        raise RecipeError(f"{where} has unknown option {sorted(extra)[0]!r} for a {dist['type']} distribution")
    if dist["type"] == "categorical":
        if not isinstance(dist.get("choices"), list) or not dist["choices"]:
            raise RecipeError(f"{where}.choices must be a non-empty list")
        samples = dist["choices"]
    else:
        low, high = dist.get("low"), dist.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise RecipeError(f"{where} needs numbers low <= high")
        if dist.get("log") and low <= 0:
            raise RecipeError(f"{where} is log-scaled, so low must be > 0")
        samples = [low, high]
    for value in samples:  # each bound must make a valid recipe: catches warmup >= max_epochs early
        try:
            rc.load(None, [(key, value)], base=recipe)
        except RecipeError as exc:
            raise RecipeError(f"{where}: {exc}") from None


def make_sampler(seed: int | None) -> optuna.samplers.TPESampler:
    """TPE with its own seed, not the training seed: workers that share a study must not draw
    the same trials. ``constant_liar`` makes running trials count as bad results so parallel
    workers spread out instead of all sampling next to the current best."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
