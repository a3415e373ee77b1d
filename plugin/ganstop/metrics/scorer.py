"""Scoring generated samples with a recipe's metrics: the held-out reference, the feature networks
(the cached domain classifier, Inception-v3 when a metric asks for it) and each batch's features
are computed once and shared by every metric."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ganstop.errors import RecipeError
from ganstop.metrics import classifier, inception
from ganstop.metrics.registry import REGISTRY, resolve
from ganstop.paths import cache_root
from ganstop.recipe import Recipe


class Context:
    """What metric builders share: held-out reference on the device, the cached classifier, and
    which output gets a standard error (the monitored one: the stopper is what needs it)."""

    def __init__(self, recipe: Recipe, data, device: torch.device, n_samples: int, se_output: str):
        self.recipe, self.data, self.device, self.n_samples = recipe, data, device, n_samples
        self.se_output = se_output
        self.reference = (data.val + 1) / 2 if data.kind == "image" else data.val
        self.reference = self.reference.to(device)
        self.classifier_accuracy: float | None = None

    @functools.cached_property
    def cache(self) -> Path:
        return Path(self.recipe.metrics.cache_dir) if self.recipe.metrics.cache_dir else cache_root()

    @functools.cached_property
    def classifier(self) -> classifier.Classifier:
        model, self.classifier_accuracy = classifier.load_or_train(
            (self.data.train + 1) / 2, self.data.train_labels, (self.data.val + 1) / 2, self.data.val_labels,
            self.data.n_classes, self.recipe.metrics.classifier_epochs, self.cache, self.device)
        return model

    @functools.cached_property
    def reference_features(self) -> torch.Tensor:
        return self.classifier.features(self.reference)

    @functools.cached_property
    def inception(self) -> inception.Inception:
        return inception.Inception(inception.weights_path(self.recipe.metrics.inception_weights, self.cache), self.device)

    @functools.cached_property
    def inception_reference_features(self) -> torch.Tensor:
        return self.inception.reference(self.reference, self.cache)


class Batch:
    """One set of generated samples; what several metrics derive from it is computed once."""

    def __init__(self, samples: torch.Tensor, ctx: Context):
        self.samples, self._ctx = samples, ctx

    @functools.cached_property
    def features(self) -> torch.Tensor:
        return self._ctx.classifier.features(self.samples)

    @functools.cached_property
    def inception_features(self) -> torch.Tensor:
        return self._ctx.inception.features(self.samples)

    def features_of(self, network: str) -> torch.Tensor:
        """This batch's features on ``network`` ("classifier" or "inception")."""
        return self.inception_features if network == "inception" else self.features


def reference_features(ctx, network: str) -> torch.Tensor:
    """The reference's features on ``network`` ("classifier" or "inception")."""
    return ctx.inception_reference_features if network == "inception" else ctx.reference_features


def _check_sizes(reference: int, generated: int) -> None:
    """FID, KID and prdc compare sets of at least 2 images: a run must not train for hours and
    then fail on its first check or on its test scores."""
    if reference < 2:
        raise RecipeError(f"a held-out split of the images (validation or test) holds {reference} image(s), and the "
                          "image metrics need at least 2: raise dataset.val_fraction / dataset.test_fraction, or add images")
    if generated < 2:
        raise RecipeError(f"metrics.n_samples={generated}: the image metrics need at least 2 generated samples")


class Scorer:
    """All selected metrics of one recipe, computed from one batch of generated samples."""

    def __init__(self, recipe: Recipe, data, device: torch.device):
        self.selection = resolve(recipe)
        self.n_samples = recipe.metrics.n_samples or len(data.val)
        if data.kind == "image":
            _check_sizes(len(data.val), self.n_samples)
        self._ctx = Context(recipe, data, device, self.n_samples, self.selection.monitor)
        self.computes = {name: REGISTRY[name].build(self._ctx) for name in self.selection.names}
        self.classifier_accuracy = self._ctx.classifier_accuracy

    def batch(self, samples: torch.Tensor) -> Batch:
        """Samples in user units: images in [0, 1], points as coordinates."""
        return Batch(samples.to(self._ctx.device), self._ctx)

    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        batch = self.batch(samples)
        out: dict[str, float] = {}
        for compute in self.computes.values():
            out.update(compute(batch))
        return out
