"""FID, KID and class coverage on the cached classifier's features; Inception FID on demand.

Each builder takes the shared context once and returns a function from a ``Batch`` of generated
samples to numbers. The classifier runs once per reference set and once per batch: FID, KID and
coverage all read the same features (three passes had made validation 13% of a digits epoch).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ganstop.recipe import RecipeError

Compute = Callable[["Batch"], dict[str, float]]
CHUNK = 512
KID_SUBSETS = 20  # the mean's spread over subsets is well under its change between checks


class Embedded(nn.Module):
    """The feature network torchmetrics sees: an identity, because its inputs are features already."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _against_reference(metric, ctx, finish: Callable[[object], dict[str, float]]) -> Compute:
    metric = metric.to(ctx.device)
    metric.update(ctx.reference_features, real=True)

    def compute(batch) -> dict[str, float]:
        metric.reset()  # keeps the real features
        metric.update(batch.features, real=False)
        return finish(metric)

    return compute


def fid(ctx) -> Compute:
    metric = FrechetInceptionDistance(feature=Embedded(ctx.reference_features.shape[1]), reset_real_features=False)
    return _against_reference(metric, ctx, lambda m: {"fid": float(m.compute())})


def kid(ctx) -> Compute:
    size = min(ctx.recipe.metrics.kid_subset_size, len(ctx.reference), ctx.n_samples)
    with warnings.catch_warnings():  # "saves all features": held-out sets are small by design
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=Embedded(ctx.reference_features.shape[1]), subsets=KID_SUBSETS,
                                         subset_size=size, reset_real_features=False)

    def finish(m) -> dict[str, float]:
        mean, std = m.compute()
        return {"kid": float(mean), "kid_std": float(std)}

    return _against_reference(metric, ctx, finish)


def coverage(ctx) -> Compute:
    """Share of classes the classifier sees in the samples, and KL to the data's histogram."""
    head, n = ctx.classifier.head, ctx.data.n_classes
    p_data = torch.bincount(ctx.data.val_labels, minlength=n).double()
    p_data = (p_data / p_data.sum()).clamp_min(1e-12)

    @torch.no_grad()
    def compute(batch) -> dict[str, float]:
        preds = head(batch.features).argmax(1).cpu()
        p = torch.bincount(preds, minlength=n).double() / len(preds)
        kl = torch.special.xlogy(p, p).sum() - torch.special.xlogy(p, p_data).sum()
        return {"class_coverage": float((p > 0).double().mean()), "class_kl": float(kl)}

    return compute


def inception_fid(ctx) -> Compute:
    """FID on Inception-v3 pool features, from weights the user supplies (no downloads here)."""
    weights = ctx.recipe.metrics.inception_weights
    if not Path(weights).is_file():
        raise RecipeError(f"metrics.inception_weights {weights!r} is not a file")
    try:
        metric = FrechetInceptionDistance(feature=2048, reset_real_features=False, normalize=True,
                                          feature_extractor_weights_path=weights)
    except ModuleNotFoundError:
        raise RecipeError("inception_fid needs torch-fidelity: pip install 'mlflow-ganstop[inception]'") from None
    rgb = lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # noqa: E731
    metric = metric.to(ctx.device)

    def feed(images: torch.Tensor, real: bool) -> None:  # Inception at 299x299: a chunk at a time
        for chunk in images.split(CHUNK):
            metric.update(rgb(chunk), real=real)

    feed(ctx.reference, real=True)

    def compute(batch) -> dict[str, float]:
        metric.reset()
        feed(batch.samples, real=False)
        return {"inception_fid": float(metric.compute())}

    return compute
