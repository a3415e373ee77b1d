"""ganstop's model families, ``mlp`` (2D points) and ``dcgan`` (images), and ``build``, which makes
any installed family's pair: the built-ins are ``ganstop.models`` entry points like a user's."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganstop import plugins
from ganstop.recipe import ModelConfig, Recipe


def _d_layer(layer: nn.Module, norm: str, features: int, conv: bool) -> list[nn.Module]:
    """A discriminator layer with its normalization: batch, spectral or none."""
    if norm == "spectral":
        return [spectral_norm(layer)]
    if norm == "batch":
        return [layer, nn.BatchNorm2d(features) if conv else nn.BatchNorm1d(features)]
    return [layer]


class MLPGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig, out_dim: int):
        super().__init__()
        layers, width = [], cfg.z_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.width), nn.ReLU()]
            width = cfg.width
        self.net = nn.Sequential(*layers, nn.Linear(width, out_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, in_dim: int):
        super().__init__()
        layers, width = [], in_dim
        for i in range(cfg.depth):
            norm = "none" if i == 0 and cfg.d_norm == "batch" else cfg.d_norm  # no BN on raw input
            layers += _d_layer(nn.Linear(width, cfg.width), norm, cfg.width, conv=False) + [nn.LeakyReLU(0.2)]
            width = cfg.width
        self.net = nn.Sequential(*layers, *_d_layer(nn.Linear(width, 1), "spectral" if cfg.d_norm == "spectral" else "none", 1, False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class DCGANGenerator(nn.Module):
    """Project to 4x4, then transposed-conv doublings to the image size (Radford et al.)."""

    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int]):
        super().__init__()
        channels, size = shape[0], shape[-1]
        n_up = int(math.log2(size)) - 2
        self.base = ch = cfg.width * 2 ** (n_up - 1)
        self.project = nn.Linear(cfg.z_dim, ch * 16, bias=False)
        self.start = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU())
        blocks = []
        for _ in range(n_up):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        self.body = nn.Sequential(*blocks, nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.base, 4, 4)  # not len(z): export keeps the batch dynamic
        return self.body(self.start(x))


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig, shape: tuple[int, int, int]):
        super().__init__()
        channels, size = shape[0], shape[-1]
        n_down = int(math.log2(size)) - 2
        ch = cfg.width // 2  # doubles n_down times, ending where the generator starts
        stem = nn.Conv2d(channels, ch, 3, 1, 1)
        layers = [spectral_norm(stem) if cfg.d_norm == "spectral" else stem, nn.LeakyReLU(0.2)]
        for _ in range(n_down):
            layers += _d_layer(nn.Conv2d(ch, ch * 2, 4, 2, 1), cfg.d_norm, ch * 2, conv=True) + [nn.LeakyReLU(0.2)]
            ch *= 2
        head = nn.Linear(ch * 16, 1)
        self.net = nn.Sequential(*layers, nn.Flatten(), spectral_norm(head) if cfg.d_norm == "spectral" else head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class Sampler(nn.Module):
    """What the MLflow model serves: latents in, samples in user units out ([0, 1] images)."""

    def __init__(self, generator: nn.Module, images: bool):
        super().__init__()
        self.generator, self.images = generator, images

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.generator(z)
        return ((x + 1) / 2).clamp(0, 1) if self.images else x


def _mlp(recipe: Recipe, sample_shape: tuple[int, ...], options: None) -> tuple[nn.Module, nn.Module]:
    dim = math.prod(sample_shape)
    return MLPGenerator(recipe.model, dim), MLPDiscriminator(recipe.model, dim)


def _dcgan(recipe: Recipe, sample_shape: tuple[int, ...], options: None) -> tuple[nn.Module, nn.Module]:
    return DCGANGenerator(recipe.model, sample_shape), DCGANDiscriminator(recipe.model, sample_shape)


mlp = plugins.ModelFamily(_mlp, kinds=("points",))
dcgan = plugins.ModelFamily(_dcgan, kinds=("image",))


def build(recipe: Recipe, sample_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """The (generator, discriminator) pair of the recipe's model family for a sample shape."""
    family = recipe.model.family
    return plugins.load("models", family).build(recipe, tuple(sample_shape), recipe.options(family))
