"""Optimizers and decay: AdamW weight decay, per-epoch LR schedules, the D weight penalty, generator EMA.

Schedules are torch's own. Each is parameterized by ``final_lr``, the LR reached at
``max_epochs`` as a fraction of the start, so a search can compare schedule kinds on one
axis instead of mixing gammas, step sizes and eta_min.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel


def optimizer(module: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(module.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)


def scheduler(opt: torch.optim.Optimizer, kind: str, final_lr: float, max_epochs: int,
              step_every: int) -> lr_scheduler.LRScheduler:
    if kind == "none":
        return lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if kind == "linear":
        return lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=final_lr, total_iters=max_epochs)
    if kind == "exponential":
        return lr_scheduler.ExponentialLR(opt, gamma=final_lr ** (1 / max_epochs))
    if kind == "step":
        drops = max(1, max_epochs // step_every)
        return lr_scheduler.StepLR(opt, step_size=step_every, gamma=final_lr ** (1 / drops))
    if kind == "cosine":
        base = opt.param_groups[0]["lr"]
        return lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs, eta_min=base * final_lr)
    raise ValueError(f"unknown LR schedule {kind!r}")


ANNEALED = 0.25  # annealed_epoch: this share of the schedule's decay, on a log scale


def annealed_epoch(decay: object, max_epochs: int) -> int | None:
    """The first epoch by which every decaying LR schedule of ``decay`` (a recipe's decay section)
    has come down by ANNEALED of its whole decay on a log scale (cosine to 1/1000 over 100
    epochs: below 18% of its start, at epoch 73); None when no LR decays. Read off torch's own
    schedulers, stepped as training steps them. The forecast waits for it: GAN curves often
    drop while the LR anneals, so a plateau or a bump at a high LR says little about the end.
    Chosen on the 2D recipes' seeds 100-104 (docs/benchmarks.md)."""
    epochs = []
    for kind, final in ((decay.g_schedule, decay.g_final_lr), (decay.d_schedule, decay.d_final_lr)):
        if kind == "none" or final >= 1:
            continue
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = scheduler(opt, kind, final, max_epochs, decay.step_every)
        bar = final ** ANNEALED
        for epoch in range(1, max_epochs + 1):
            opt.step()
            sched.step()
            if sched.get_last_lr()[0] <= bar * (1 + 1e-9):
                break
        epochs.append(epoch)
    return max(epochs) if epochs else None


def weight_penalty(module: nn.Module, kind: str) -> torch.Tensor:
    """R(D): L1 or L2 norm of the weight matrices/kernels (biases and norms left alone)."""
    weights = [p for p in module.parameters() if p.ndim > 1]
    if kind == "l1":
        return sum(w.abs().sum() for w in weights)
    return sum(w.square().sum() for w in weights)


def ema_decay(decay: float, n_averaged: torch.Tensor) -> torch.Tensor:
    """Ramped decay, min(decay, (1 + n) / (10 + n)) as in StyleGAN's ema_rampup: a fixed 0.999
    would keep the average near the initial weights for thousands of steps."""
    n = n_averaged.to(torch.float32)
    return torch.clamp((1 + n) / (10 + n), max=decay)


def ema(generator: nn.Module, decay: float) -> AveragedModel:
    """EMA of the generator, buffers included so batch-norm statistics follow the weights.

    swa_utils' own ``get_ema_multi_avg_fn`` takes a fixed float decay; this is the same
    ``_foreach_lerp_`` with the ramped decay. On a GPU each update waits for the device twice:
    ``AveragedModel`` copies its step counter (a CPU buffer) to the GPU, and the lerp takes the
    ramped weight as a number; the gpu_throughput benchmark's EMA row prices both.
    """

    @torch.no_grad()
    def ramped(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # integer buffers (BN's batch counter) just follow
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1 - ema_decay(decay, num_averaged).to(averaged[0].device))

    return AveragedModel(generator, multi_avg_fn=ramped, use_buffers=True)
