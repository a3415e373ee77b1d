"""Mode metrics for 2D Gaussian mixtures (VEEGAN / PacGAN protocol) and the sliced Wasserstein
distance.

A sample is high quality within 3 std of its nearest mean; a mode is covered when a
high-quality sample is nearest to it. Everything below is read off one histogram: the
high-quality samples per mode, plus one bin for the rest, so the standard error (over random
halves, see ``uncertainty``) recounts bins, not distances.
"""

from __future__ import annotations

import math

import torch

from ganstop.metrics import uncertainty

OUTPUTS = ("modes", "hq_ratio", "mode_kl", "mode_error")


def bins(samples: torch.Tensor, means: torch.Tensor, std: float) -> torch.Tensor:
    """Per sample: the index of its nearest mean if it is high quality, else len(means)."""
    nearest_dist, nearest = torch.cdist(samples.to(means.device, torch.float32), means).min(dim=1)
    return torch.where(nearest_dist < 3 * std, nearest, len(means))


def scores(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mode metrics of one histogram, or of a stack of them (last dimension: K modes + other).

    ``mode_error`` = 1 - sum_k min(hq_k / N, 1 / K) is the share of samples that are low
    quality or beyond their mode's fair 1/K share: 0 only when every sample is high quality and
    the modes are balanced; a missing mode costs 1/K, a low-quality sample 1/N. It charges
    imprecision and missing coverage together, which SWD does not (SWD prefers mass piled into
    fewer, blurrier modes late in training). Lower is better, like FID, so a relative min_delta
    or "within 5%" reads as a share of the remaining error, not of a score near 1. ``mode_kl`` is KL(mode histogram || uniform) over the
    high-quality samples, log K when there are none (a total collapse).
    """
    hq, k = counts[..., :-1], counts.shape[-1] - 1
    n, n_hq = counts.sum(-1), hq.sum(-1)
    p = hq / n_hq.clamp_min(1).unsqueeze(-1)
    kl = torch.where(n_hq > 0, torch.special.xlogy(p, p * k).sum(-1), math.log(k))
    return {"modes": (hq > 0).sum(-1).double(), "hq_ratio": n_hq / n, "mode_kl": kl,
            "mode_error": 1 - (hq / n.unsqueeze(-1)).clamp(max=1 / k).sum(-1)}


def mode_metrics(samples: torch.Tensor, means: torch.Tensor, std: float, se: str | None = None) -> dict[str, float]:
    """Modes covered, high-quality ratio, KL to uniform and mode_error; ``se`` names an output
    whose standard error is added as ``<output>_se``."""
    labels, width = bins(samples, means, std), len(means) + 1
    out = {name: float(value) for name, value in scores(torch.bincount(labels, minlength=width).double()).items()}
    out["modes"] = int(out["modes"])
    if se is not None:
        halves = labels[uncertainty.halves(len(labels), labels.device)]
        halves += torch.arange(len(halves), device=labels.device).unsqueeze(1) * width  # one bincount for all
        counts = torch.bincount(halves.flatten(), minlength=len(halves) * width).view(len(halves), width)
        out[f"{se}_se"] = uncertainty.standard_error(scores(counts.double())[se])
    return out


def modes(ctx):
    """Registry builder: mode metrics against the dataset's own mixture."""
    means = ctx.data.means.to(ctx.device)
    se = ctx.se_output if ctx.se_output in OUTPUTS else None
    return lambda batch: mode_metrics(batch.samples, means, ctx.data.std, se)


def _projections(points: torch.Tensor, projections: int) -> torch.Tensor:
    directions = torch.randn(points.shape[1], projections, generator=torch.Generator().manual_seed(0))
    return points.float() @ (directions / directions.norm(dim=0)).to(points.device)


def _quantiles(values: torch.Tensor, levels: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.quantile`` (linear interpolation) by one sort: ten times faster on these sizes."""
    ordered = values.sort(dim=dim).values
    position = levels * (values.shape[dim] - 1)
    low = position.floor().long()
    high = (low + 1).clamp(max=values.shape[dim] - 1)
    shape = [1] * values.ndim
    shape[dim] = len(levels)
    frac = (position - low).view(shape)
    return ordered.index_select(dim, low) * (1 - frac) + ordered.index_select(dim, high) * frac


def sliced_wasserstein(samples: torch.Tensor, reference: torch.Tensor, projections: int = 128,
                       with_se: bool = False) -> dict[str, float]:
    """W1 distance averaged over fixed random 1D projections (SWD, as in ProGAN).

    Unlike the mode counts it moves smoothly from the first epoch on (a blob far from every
    mode still gets closer). Written here: it is a sort per projection, not worth a dependency
    (POT) for 2D points. The standard error resamples the generated points.
    """
    levels = torch.linspace(0, 1, min(len(samples), len(reference)), device=samples.device)
    projected = _projections(samples, projections)
    target = _quantiles(_projections(reference, projections), levels, dim=0)
    out = {"swd": float((_quantiles(projected, levels, dim=0) - target).abs().mean())}
    if with_se:
        resampled = projected[uncertainty.halves(len(samples), samples.device)]  # (R, n, P)
        distances = (_quantiles(resampled, levels, dim=1) - target).abs().mean(dim=(1, 2))
        out["swd_se"] = uncertainty.standard_error(distances)
    return out


def swd(ctx):
    """Registry builder: SWD against the held-out points."""
    with_se = ctx.se_output == "swd"
    return lambda batch: sliced_wasserstein(batch.samples, ctx.reference, with_se=with_se)
