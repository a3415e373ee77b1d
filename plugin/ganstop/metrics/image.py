"""FID, KID and class coverage on the cached classifier's features; Inception FID on demand.

Each builder takes the shared context once (reference features are computed a single time,
``reset_real_features=False``) and returns a function from generated samples to numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ganstop.recipe import RecipeError

Compute = Callable[[torch.Tensor], dict[str, float]]
CHUNK = 512


def _feed(metric, images: torch.Tensor, real: bool) -> None:
    for chunk in images.split(CHUNK):
        metric.update(chunk, real=real)


def _against_reference(metric, reference: torch.Tensor, finish: Callable[[object], dict[str, float]]) -> Compute:
    _feed(metric, reference, real=True)

    def compute(fake: torch.Tensor) -> dict[str, float]:
        metric.reset()  # keeps the real features
        _feed(metric, fake, real=False)
        return finish(metric)

    return compute


def fid(ctx) -> Compute:
    metric = FrechetInceptionDistance(feature=ctx.features, reset_real_features=False, normalize=True)
    return _against_reference(metric.to(ctx.device), ctx.reference, lambda m: {"fid": float(m.compute())})


def kid(ctx) -> Compute:
    size = min(ctx.recipe.metrics.kid_subset_size, len(ctx.reference), ctx.n_samples)
    with warnings.catch_warnings():  # "saves all features": held-out sets are small by design
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=ctx.features, subsets=50, subset_size=size,
                                         reset_real_features=False, normalize=True)

    def finish(m) -> dict[str, float]:
        mean, std = m.compute()
        return {"kid": float(mean), "kid_std": float(std)}

    return _against_reference(metric.to(ctx.device), ctx.reference, finish)


def coverage(ctx) -> Compute:
    """Share of classes the classifier sees in the samples, and KL to the data's histogram."""
    classifier, n = ctx.classifier, ctx.data.n_classes
    p_data = torch.bincount(ctx.data.val_labels, minlength=n).double()
    p_data = (p_data / p_data.sum()).clamp_min(1e-12)

    @torch.no_grad()
    def compute(fake: torch.Tensor) -> dict[str, float]:
        preds = torch.cat([classifier(chunk).argmax(1).cpu() for chunk in fake.split(CHUNK)])
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
    _feed(metric, rgb(ctx.reference), real=True)

    def compute(fake: torch.Tensor) -> dict[str, float]:
        metric.reset()
        _feed(metric, rgb(fake), real=False)
        return {"inception_fid": float(metric.compute())}

    return compute
