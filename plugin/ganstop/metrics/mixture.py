"""Mode metrics for 2D Gaussian mixtures (VEEGAN / Unrolled-GAN protocol)."""

from __future__ import annotations

import math

import torch


def mode_metrics(samples: torch.Tensor, means: torch.Tensor, std: float) -> dict[str, float]:
    """Modes covered, high-quality ratio and KL(mode histogram || uniform).

    A sample is high quality within 3 std of its nearest mean; a mode is covered when a
    high-quality sample is nearest to it. The histogram counts high-quality samples only;
    with none at all, KL is log K, the value of a total collapse.
    """
    samples = samples.to(means.device, torch.float32)
    dist = torch.cdist(samples, means)
    nearest_dist, nearest = dist.min(dim=1)
    hq = nearest_dist < 3 * std
    counts = torch.bincount(nearest[hq], minlength=len(means)).double()
    k = len(means)
    if counts.sum() == 0:
        kl = math.log(k)
    else:
        p = counts / counts.sum()
        kl = float(torch.special.xlogy(p, p * k).sum())
    return {"modes": int((counts > 0).sum()), "hq_ratio": float(hq.double().mean()), "mode_kl": kl}


def modes(ctx):
    """Registry builder: mode metrics against the dataset's own mixture."""
    means = ctx.data.means.to(ctx.device)
    return lambda batch: mode_metrics(batch.samples, means, ctx.data.std)


def sliced_wasserstein(samples: torch.Tensor, reference: torch.Tensor, projections: int = 128) -> float:
    """W1 distance averaged over fixed random 1D projections (SWD, as in ProGAN).

    Unlike the mode counts it moves smoothly from the first epoch on (a blob far from every
    mode still gets closer), so the stopper has a signal before any sample is high quality.
    Written here: it is a sort per projection, not worth a dependency (POT) for 2D points.
    """
    directions = torch.randn(samples.shape[1], projections, generator=torch.Generator().manual_seed(0))
    directions = (directions / directions.norm(dim=0)).to(samples.device)
    levels = torch.linspace(0, 1, min(len(samples), len(reference)), device=samples.device)
    a = torch.quantile(samples.float() @ directions, levels, dim=0)
    b = torch.quantile(reference.float() @ directions, levels, dim=0)
    return float((a - b).abs().mean())


def swd(ctx):
    """Registry builder: SWD against the held-out points."""
    return lambda batch: {"swd": sliced_wasserstein(batch.samples, ctx.reference)}
