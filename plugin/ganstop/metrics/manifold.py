"""Precision and recall (Kynkäänniemi et al. 2019, k = 3) and density and coverage (Naeem et al.
2020, k = 5; a set of n <= k samples uses k = n - 1): k-nearest-neighbour balls around the held-out features (and, for recall, around the
generated ones) that say whether a worse FID means bad samples (precision, density fall) or
dropped modes (recall, coverage fall). On the run's feature network (``metrics.features``): the
classifier by default, torch-fidelity's Inception-v3 on request.

Written here, not taken from ``prdc`` (the authors' reference, which the tests compare against):
it recomputes the reference's radii at every call, prints on every call and spreads its distance
matrices over 8 joblib processes. Here the reference's radii are computed once per run on the
device, and a check costs one reference x generated distance matrix and the generated samples'
own, in row blocks so 50,000 samples fit in memory.
"""

from __future__ import annotations

import torch

from ganstop.metrics import uncertainty
from ganstop.metrics.scorer import reference_features

PR_K, DC_K = 3, 5  # the papers' k: precision/recall, density/coverage
BLOCK = 4096  # rows of a distance matrix held at once
OUTPUTS = ("precision", "recall", "density", "coverage")


def usable_k(k: int, n: int) -> int:
    """The papers' k, or n - 1 for a set of n <= k samples (a tiny held-out split), at least 1."""
    return max(1, min(k, n - 1))


def radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row (``usable_k``); 0 for a lone row."""
    if len(x) < 2:
        return torch.zeros(len(x), device=x.device)
    k = usable_k(k, len(x))
    return torch.cat([torch.cdist(part, x).kthvalue(k + 1, dim=1).values for part in x.split(BLOCK)])


def scores(real: torch.Tensor, real_pr: torch.Tensor, real_dc: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """(precision, recall, density, coverage) of ``fake`` against ``real`` and its radii."""
    fake_pr = radii(fake, PR_K)
    in_real = torch.zeros(len(fake), dtype=torch.bool, device=fake.device)  # precision: in some real ball
    balls = torch.zeros(len(fake), device=fake.device)  # density: how many real (k = 5) balls
    recalled, covered = [], []
    for rows, r_pr, r_dc in zip(real.split(BLOCK), real_pr.split(BLOCK), real_dc.split(BLOCK)):
        d = torch.cdist(rows, fake)
        in_real |= (d < r_pr[:, None]).any(0)
        balls += (d < r_dc[:, None]).sum(0)
        recalled.append((d < fake_pr[None, :]).any(1))
        covered.append(d.min(1).values < r_dc)
    return torch.stack([in_real.float().mean(), torch.cat(recalled).float().mean(), balls.mean() / usable_k(DC_K, len(real)),
                        torch.cat(covered).float().mean()])


def prdc(ctx):
    network = ctx.recipe.metrics.features
    real = reference_features(ctx, network)
    real_pr, real_dc = radii(real, PR_K), radii(real, DC_K)
    halves = uncertainty.halves(ctx.n_samples, real.device)

    def compute(batch) -> dict[str, float]:
        fake = batch.features_of(network)
        value = scores(real, real_pr, real_dc, fake)
        spread = torch.stack([scores(real, real_pr, real_dc, fake[idx]) for idx in halves])
        return {**dict(zip(OUTPUTS, value.tolist())),
                **{f"{name}_se": uncertainty.standard_error(spread[:, i]) for i, name in enumerate(OUTPUTS)}}

    return compute
