"""Batch norm over the global batch of a data-parallel run (``train.sync_batchnorm``).

On GPUs this is torch's ``nn.SyncBatchNorm``. torch's works only on GPU modules, so on CPUs
(gloo, and the tests on 2 cores) ``CpuSyncBatchNorm`` computes the same statistics with
``distributed.sum_over_ranks``, a differentiable all-reduce: the mean and the variance over
every rank's samples, gradients flowing back through both, as one process on the whole batch
would.
"""

from __future__ import annotations

import torch
from torch import nn

from ganstop.training import distributed


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``nn.SyncBatchNorm`` for CPU tensors: any input rank, statistics over the whole world."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = distributed.sum_over_ranks(torch.tensor([x.numel() / x.size(1)], dtype=x.dtype))
        mean = distributed.sum_over_ranks(x.sum(dims)) / count
        var = distributed.sum_over_ranks((x - mean.view(shape)).square().sum(dims)) / count
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 1 / (1 + int(self.num_batches_tracked))
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out


def convert(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every batch norm synchronised over the world: torch's on GPUs, ours on CPUs."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert(child, device)
    return module
