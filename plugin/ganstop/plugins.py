"""Plugins by entry point: model families (``ganstop.models``), data sets (``ganstop.datasets``)
and GAN objectives (``ganstop.losses``), found by the name a recipe gives. ganstop registers its
own in its pyproject.toml the same way, so the built-ins take the path a user's plugin takes.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."ganstop.models"]
    sngan = "my_gan.plugin:family"      # a ganstop.plugins.ModelFamily

A plugin with settings of its own gives them as a pydantic model (``options``). The recipe holds
them in a section named after the plugin (``sngan: {power_iterations: 2}``); they are validated,
overridden with ``--set sngan.power_iterations=2`` and searched like any built-in key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Callable

from ganstop.errors import RecipeError, first_line, suggest

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ganstop.data.sets import Data
    from ganstop.recipe import Recipe

@dataclass(frozen=True)
class ModelFamily:
    """``build(recipe, sample_shape, options) -> (generator, discriminator)``.

    The generator maps ``(n, recipe.model.z_dim)`` latents to samples in data units (images in
    [-1, 1], NCHW; points as coordinates); the discriminator returns one logit per sample, ``(n,)``.
    """

    build: Callable[[Recipe, tuple[int, ...], Any], tuple[nn.Module, nn.Module]]
    kinds: tuple[str, ...] = ("image", "points")  # the data kinds it models
    options: type | None = None  # pydantic model of the recipe section named after the plugin


@dataclass(frozen=True)
class Dataset:
    """``load(recipe, options) -> ganstop.data.sets.Data``: train, validation and test splits
    (``ganstop.data.sets.image_data`` makes them from one tensor of images and labels)."""

    load: Callable[[Recipe, Any], Data]
    kind: str  # "image" (NCHW in [-1, 1], with labels for the feature classifier) | "points"
    options: type | None = None
    needs_root: bool = False  # reads dataset.root: a recipe without one is refused before anything runs


@dataclass(frozen=True)
class Objective:
    """A GAN objective: D's loss from (D(real), D(fake)), G's loss from D(fake), and optionally a
    penalty ``penalty(discriminator, real, fake)`` added to D's loss, weighted by ``train.gp_lambda``
    (WGAN-GP's gradient penalty). R1 (``train.r1_gamma``) can be added to any objective."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    penalty: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    options: type | None = None


KINDS = {"models": ("model family", ModelFamily), "datasets": ("dataset", Dataset), "losses": ("loss", Objective)}
RESERVED = ("dataset", "model", "train", "decay", "ema", "stopping", "metrics", "search")  # recipe sections


@functools.cache
def installed(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``ganstop.<group>``, by name (read once per process)."""
    return {ep.name: ep for ep in entry_points(group=f"ganstop.{group}")}


def names(group: str) -> list[str]:
    return sorted(installed(group))


@functools.cache
def load(group: str, name: str) -> ModelFamily | Dataset | Objective:
    """The plugin object registered as ``name``, or a one-line RecipeError that lists what is installed."""
    what, expected = KINDS[group]
    found = installed(group)
    if name not in found:
        listed = ", ".join(names(group)) or "none"
        raise RecipeError(f"unknown {what} {name!r}{suggest(name, found)}; installed: {listed}")
    if name in RESERVED:
        raise RecipeError(f"{what} plugin {name!r} ({found[name].value}) takes the name of a recipe section; "
                          f"rename its entry point")
    try:
        obj = found[name].load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix; say which and why
        raise RecipeError(f"{what} plugin {name!r} ({found[name].value}) cannot be imported: {first_line(exc)}") from None
    if not isinstance(obj, expected):
        raise RecipeError(f"{what} plugin {name!r} ({found[name].value}) is a {type(obj).__name__}, "
                          f"not a ganstop.plugins.{expected.__name__}")
    return obj


def option_model(section: str) -> type | None:
    """The pydantic model of the options the installed plugin named ``section`` declares (the
    first group that has one), or None. Only plugins of that name are imported."""
    if section in RESERVED:
        return None
    for group in KINDS:
        if section in installed(group) and (options := load(group, section).options) is not None:
            return options
    return None


def option_models() -> dict[str, type]:
    """Recipe sections that installed plugins add: plugin name -> pydantic model of its options.
    Imports every installed plugin: for listing them, not for resolving one."""
    every = sorted({name for group in KINDS for name in installed(group)})
    return {name: options for name in every if (options := option_model(name)) is not None}
