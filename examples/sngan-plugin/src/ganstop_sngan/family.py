"""``sngan``: a generator of upsampling convolutions and a discriminator with spectral norm on
every layer (Miyato et al. 2018), for images of any size with a side divisible by 4.

Its settings live in the recipe section ``sngan:`` and are checked by ``SNGANOptions``, so
``--set sngan.channels=32`` and ``search.space: {sngan.channels: ...}`` work like built-in keys.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganstop.plugins import ModelFamily
from ganstop.recipe import Recipe, Section


class SNGANOptions(Section):
    channels: int = Field(64, gt=0)  # channels at the lowest resolution; halved at each upsampling
    slope: float = Field(0.1, ge=0, lt=1)  # LeakyReLU slope in the discriminator (SNGAN uses 0.1)


def _doublings(size: int) -> int:
    """How many times the side halves on the way down to a 4x4 (or odd) start."""
    n = 0
    while size % 2 == 0 and size > 4:
        size, n = size // 2, n + 1
    return n


class Generator(nn.Module):
    def __init__(self, z_dim: int, shape: tuple[int, int, int], channels: int):
        super().__init__()
        n_up = _doublings(shape[-1])
        self.start, self.ch = shape[-1] >> n_up, channels
        self.project = nn.Linear(z_dim, channels * self.start**2)
        blocks, ch = [], channels
        for _ in range(n_up):
            blocks += [nn.BatchNorm2d(ch), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(ch, ch // 2, 3, 1, 1)]
            ch //= 2
        self.body = nn.Sequential(*blocks, nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, shape[0], 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.body(self.project(z).view(-1, self.ch, self.start, self.start))


class Discriminator(nn.Module):
    def __init__(self, shape: tuple[int, int, int], channels: int, slope: float):
        super().__init__()
        n_down = _doublings(shape[-1])
        ch = max(channels >> n_down, 8)
        layers = [spectral_norm(nn.Conv2d(shape[0], ch, 3, 1, 1)), nn.LeakyReLU(slope)]
        for _ in range(n_down):
            layers += [spectral_norm(nn.Conv2d(ch, ch * 2, 4, 2, 1)), nn.LeakyReLU(slope)]
            ch *= 2
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), spectral_norm(nn.Linear(ch, 1)))

    def forward(self, x):
        return self.net(x).squeeze(1)


def build(recipe: Recipe, shape: tuple[int, ...], options: SNGANOptions) -> tuple[nn.Module, nn.Module]:
    return (Generator(recipe.model.z_dim, shape, options.channels),
            Discriminator(shape, options.channels, options.slope))


sngan = ModelFamily(build, kinds=("image",), options=SNGANOptions)
