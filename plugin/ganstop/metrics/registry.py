"""Which metrics exist, what they output, which direction is better, and how to build them.

Add a metric by adding a ``Metric`` entry; the recipe checks names and the monitor here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ganstop import plugins
from ganstop.errors import RecipeError, suggest

if TYPE_CHECKING:
    from ganstop.metrics.scorer import Batch, Context
    from ganstop.recipe import Recipe


@dataclass(frozen=True)
class Metric:
    kind: str  # "image" | "points"
    outputs: dict[str, str]  # output name -> "min" | "max"
    builder: str  # "module:function" in ganstop.metrics, imported on use: recipe checks stay light
    se: tuple[str, ...] = ()  # outputs it can add a standard error to, as <output>_se

    def build(self, ctx: Context) -> Callable[[Batch], dict[str, float]]:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(f"ganstop.metrics.{module}"), function)(ctx)


REGISTRY: dict[str, Metric] = {
    "fid": Metric("image", {"fid": "min"}, "image:fid", se=("fid",)),
    "kid": Metric("image", {"kid": "min", "kid_std": "min"}, "image:kid", se=("kid",)),
    "coverage": Metric("image", {"class_coverage": "max", "class_kl": "min"}, "image:coverage"),
    "inception_fid": Metric("image", {"inception_fid": "min"}, "image:inception_fid"),
    "inception_kid": Metric("image", {"inception_kid": "min", "inception_kid_std": "min"}, "image:inception_kid"),
    "prdc": Metric("image", {"precision": "max", "recall": "max", "density": "max", "coverage": "max"},
                   "manifold:prdc", se=("precision", "recall", "density", "coverage")),
    "modes": Metric("points", {"modes": "max", "hq_ratio": "max", "mode_kl": "min", "mode_error": "min"},
                    "mixture:modes", se=("modes", "hq_ratio", "mode_kl", "mode_error")),
    "swd": Metric("points", {"swd": "min"}, "mixture:swd", se=("swd",)),
}
DEFAULTS = {"image": (["fid", "kid", "coverage", "prdc"], "fid"), "points": (["modes", "swd"], "mode_error")}


@dataclass(frozen=True)
class Selection:
    names: list[str]
    monitor: str
    mode: str


def dataset_kind(recipe: Recipe) -> str:
    """"image" or "points", as the dataset plugin declares."""
    return plugins.load("datasets", recipe.dataset.name).kind


def _unknown(what: str, name: str, options) -> RecipeError:
    return RecipeError(f"unknown {what} {name!r}{suggest(name, options)}; known: {', '.join(options)}")


def outputs(names: list[str]) -> dict[str, str]:
    """Every output of these metrics, with its direction ("min" or "max")."""
    return {out: mode for name in names for out, mode in REGISTRY[name].outputs.items()}


def headline(recipe: Recipe) -> tuple[str, str]:
    """The dataset's headline metric and its direction (fid for images, mode_error for 2D):
    what promotion compares on unless told otherwise, whatever a trial monitored."""
    metric = DEFAULTS[dataset_kind(recipe)][1]
    return metric, next(m.outputs[metric] for m in REGISTRY.values() if metric in m.outputs)


def resolve(recipe: Recipe) -> Selection:
    """The metric names, monitored output and its mode for this recipe, or a RecipeError."""
    kind = dataset_kind(recipe)
    default_names, default_monitor = DEFAULTS[kind]
    names = default_names if recipe.metrics.names in ([], ["auto"]) else list(recipe.metrics.names)
    for name in names:
        if name not in REGISTRY:
            raise _unknown("metric", name, REGISTRY)
        if REGISTRY[name].kind != kind:
            raise RecipeError(f"metric {name!r} is for {REGISTRY[name].kind} data, but dataset "
                              f"{recipe.dataset.name} is {kind}; use {', '.join(default_names)}")
    directions = outputs(names)
    monitor = recipe.stopping.monitor or (default_monitor if default_monitor in directions else next(iter(directions)))
    if monitor not in directions:
        raise _unknown("stopping.monitor", monitor, directions)
    mode = directions[monitor] if recipe.stopping.mode == "auto" else recipe.stopping.mode
    with_se = {out for name in names for out in REGISTRY[name].se}
    if (recipe.stopping.min_delta == "auto" or recipe.stopping.min_delta_mode == "se") and monitor not in with_se:
        raise RecipeError(f"stopping.min_delta in standard errors needs a monitor with one, and {monitor} has none; "
                          f"use one of {', '.join(sorted(with_se))}, or a numeric min_delta")
    return Selection(names, monitor, mode)
