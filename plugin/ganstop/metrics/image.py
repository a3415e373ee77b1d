"""FID, KID and class coverage on the cached classifier's features; FID and KID on Inception's.

Each builder takes the shared context once and returns a function from a ``Batch`` of generated
samples to numbers. The classifier runs once per reference set and once per batch: FID, KID and
coverage all read the same features (three passes had made validation 13% of a digits epoch).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ganstop.metrics import uncertainty
from ganstop.metrics.scorer import reference_features

if TYPE_CHECKING:
    from ganstop.metrics.scorer import Batch

Compute = Callable[["Batch"], dict[str, float]]
# A data-parallel run gathers the samples and rank 0 scores them all (``training.callbacks.Validation``):
# torchmetrics must not sync its states with ranks that never call it.
ONE_PROCESS = {"sync_on_compute": False}
KID_SUBSETS = 20  # the mean's spread over subsets is well under its change between checks
KID_SE_SAMPLES = 1000  # KID's error works on kernel matrices: n^2 per replicate


class Embedded(nn.Module):
    """The feature network torchmetrics sees: an identity, because its inputs are features already."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _against_reference(metric, ctx, finish: Callable[[object], dict[str, float]], network: str = "classifier") -> Compute:
    metric = metric.to(ctx.device)
    metric.update(reference_features(ctx, network), real=True)

    def compute(batch) -> dict[str, float]:
        metric.reset()  # keeps the real features
        metric.update(batch.features_of(network), real=False)
        return finish(metric)

    return compute


class _FidError:
    """Standard error of FID over random halves of the generated features.

    torchmetrics computes one FID with a general eigendecomposition; here the reference's
    matrix square root A is taken once, so Tr((S_r S_g)^1/2) = sum sqrt(eig(A S_g A)) needs only
    a batched symmetric eigendecomposition (about 1 ms per replicate at 128 features).
    """

    def __init__(self, reference: torch.Tensor):
        reference = reference.double()
        self.mu, self.cov = reference.mean(0), torch.cov(reference.T)
        eigenvalues, vectors = torch.linalg.eigh(self.cov)
        self.root = ((vectors * eigenvalues.clamp_min(0).sqrt()) @ vectors.T).float()

    def frechet(self, x: torch.Tensor) -> torch.Tensor:
        """FID of each ``(n, d)`` feature set in a ``(R, n, d)`` stack against the reference."""
        mu = x.float().mean(1)
        centered = x.float() - mu.unsqueeze(1)
        cov = centered.transpose(1, 2) @ centered / (x.shape[1] - 1)
        cross = torch.linalg.eigvalsh(self.root @ cov @ self.root).clamp_min(0).sqrt().sum(-1)
        return ((mu.double() - self.mu).square().sum(-1) + cov.diagonal(dim1=1, dim2=2).sum(-1).double()
                + self.cov.trace() - 2 * cross.double())

    def __call__(self, features: torch.Tensor) -> float:
        if len(features) < 4:  # a half of one sample has no covariance: no error to estimate
            return math.nan
        return uncertainty.standard_error(self.frechet(features[uncertainty.halves(len(features), features.device)]))


def fid(ctx) -> Compute:
    metric = FrechetInceptionDistance(feature=Embedded(ctx.reference_features.shape[1]), reset_real_features=False,
                                      **ONE_PROCESS)
    compute = _against_reference(metric, ctx, lambda m: {"fid": float(m.compute())})
    if ctx.se_output != "fid":
        return compute
    error = _FidError(ctx.reference_features)
    return lambda batch: {**compute(batch), "fid_se": error(batch.features)}


class _KidError:
    """Standard error of KID: its unbiased MMD^2 (cubic kernel) over random halves, read off one
    pair of kernel matrices, plus the noise of torchmetrics' random subsets (std^2 / subsets).

    The reference's own kernel term is the same at every check and is computed once. Beyond
    KID_SE_SAMPLES, a fixed subset stands in and its spread is scaled by sqrt(subset / n), the
    U-statistic's 1/n variance, so memory stays at a few MB whatever the data set's size.
    """

    def __init__(self, reference: torch.Tensor):
        self.reference = reference[:KID_SE_SAMPLES].double()
        k_rr = self._kernel(self.reference, self.reference)
        m = len(self.reference)
        self.rr = (k_rr.sum() - k_rr.trace()) / (m * (m - 1))

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / a.shape[1] + 1) ** 3

    def __call__(self, features: torch.Tensor, subset_std: float) -> float:
        n = len(features)
        features = features[:KID_SE_SAMPLES].double()
        m = len(features)
        k_gg, k_gr = self._kernel(features, features), self._kernel(features, self.reference)
        idx = uncertainty.halves(m, features.device)
        block = k_gg[idx.unsqueeze(2), idx.unsqueeze(1)]  # (R, m/2, m/2)
        half = idx.shape[1]
        gg = (block.sum((1, 2)) - block.diagonal(dim1=1, dim2=2).sum(-1)) / (half * (half - 1))
        sampling = uncertainty.standard_error(gg + self.rr - 2 * k_gr[idx].mean((1, 2))) * (m / n) ** 0.5
        return math.hypot(sampling, subset_std / KID_SUBSETS ** 0.5)


def kid(ctx) -> Compute:
    size = min(ctx.recipe.metrics.kid_subset_size, len(ctx.reference), ctx.n_samples)
    with warnings.catch_warnings():  # "saves all features": held-out sets are small by design
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=Embedded(ctx.reference_features.shape[1]), subsets=KID_SUBSETS,
                                         subset_size=size, reset_real_features=False, **ONE_PROCESS)

    def finish(m) -> dict[str, float]:
        mean, std = m.compute()
        return {"kid": float(mean), "kid_std": float(std)}

    compute = _against_reference(metric, ctx, finish)
    if ctx.se_output != "kid":
        return compute
    error = _KidError(ctx.reference_features)

    def with_se(batch) -> dict[str, float]:
        out = compute(batch)
        return {**out, "kid_se": error(batch.features, out["kid_std"])}

    return with_se


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
    """FID on torch-fidelity's Inception-v3 pool features (``ganstop.metrics.inception``)."""
    metric = FrechetInceptionDistance(feature=Embedded(2048), reset_real_features=False, **ONE_PROCESS)
    return _against_reference(metric, ctx, lambda m: {"inception_fid": float(m.compute())}, "inception")


def inception_kid(ctx) -> Compute:
    """KID on the same features, with torch-fidelity's subsets (100 of 1,000 samples, fewer
    when fewer samples exist: then every subset holds them all, and KID is the full estimate)."""
    reference_features(ctx, "inception")  # torch-fidelity or the weights missing: the one-line error, first
    from torch_fidelity.defaults import DEFAULTS

    size = min(DEFAULTS["kid_subset_size"], len(ctx.reference), ctx.n_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=Embedded(2048), subsets=DEFAULTS["kid_subsets"], subset_size=size,
                                         reset_real_features=False, **ONE_PROCESS)

    def finish(m) -> dict[str, float]:
        mean, std = m.compute()
        return {"inception_kid": float(mean), "inception_kid_std": float(std)}

    return _against_reference(metric, ctx, finish, "inception")
