"""GAN objectives and the penalties on the discriminator's gradient.

``train.loss`` names an installed ``ganstop.losses`` plugin; ganstop's own are the
non-saturating loss (Goodfellow et al. 2014), the hinge loss (SNGAN, BigGAN) and WGAN-GP
(Gulrajani et al. 2017), whose gradient penalty on points between real and fake samples is part
of the objective. R1 on real data (``train.r1_gamma``) can be added to any of them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ganstop.plugins import Objective


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on real data, which keeps D flat around
    the data so training converges instead of circling; on the 2D mixtures it is what keeps
    every mode covered and balanced. ``real`` must require grad before D saw it."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.float().square().sum() / len(real)


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: E (||grad D(x_hat)|| - 1)^2 at random points x_hat between real and fake samples."""
    alpha = torch.rand((len(real),) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_()
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).square().mean()


nonsaturating = Objective(lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(), lambda f: F.softplus(-f).mean())
hinge = Objective(lambda r, f: torch.relu(1 - r).mean() + torch.relu(1 + f).mean(), lambda f: -f.mean())
wgan_gp = Objective(lambda r, f: f.mean() - r.mean(), lambda f: -f.mean(), penalty=gradient_penalty)
