"""Datasets as tensors: a training split, a validation split that stopping, best-epoch
selection and the search see, and a test split that only the final and promotion scores see
(one split doing all of it makes every reported score optimistic).

Everything fits in memory (the bundled digits, 2D mixtures, MNIST/CIFAR-10, a modest image
folder), so the train loop can slice batches from one tensor, resident on the GPU when
there is one, instead of paying a DataLoader per step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ganstop.data import formats
from ganstop import plugins
from ganstop.errors import RecipeError
from ganstop.recipe import Recipe


@dataclass
class Data:
    kind: str  # "image" (values in [-1, 1]) or "points" (raw 2D coordinates)
    train: torch.Tensor
    val: torch.Tensor
    train_labels: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None
    test: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    n_classes: int = 0
    means: torch.Tensor | None = None  # mixture component means (points only)
    std: float = 0.0  # mixture component std (points only)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def test_split(self) -> "Data":
        """The same data with the test split as the held-out reference the metrics score against."""
        return dataclasses.replace(self, val=self.test, val_labels=self.test_labels)


def mixture_means(name: str) -> tuple[torch.Tensor, float]:
    """Component means and std of the classic 2D benchmarks.

    The ring uses k/8 of a full turn for k = 0..7; ``linspace(0, 2*pi, 8)`` would put the
    first and last mean on the same point and give only 7 modes.
    """
    if name == "ring8":
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return torch.stack([angles.cos(), angles.sin()], dim=1).float(), 0.01
    if name == "grid25":
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        return torch.cartesian_prod(axis, axis), 0.05
    raise KeyError(name)


def sample_mixture(means: torch.Tensor, std: float, n: int, generator: torch.Generator) -> torch.Tensor:
    component = torch.randint(len(means), (n,), generator=generator)
    return means[component] + std * torch.randn(n, 2, generator=generator)


def _split(images: torch.Tensor, labels: torch.Tensor, val_fraction: float, test_fraction: float, seed: int) -> Data:
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val, n_test = (max(1, int(round(len(images) * f))) for f in (val_fraction, test_fraction))
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    return Data("image", images[train], images[val], labels[train], labels[val], images[test], labels[test],
                int(labels.max()) + 1)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if not size or images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False).clamp(-1, 1)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images * 2 - 1, torch.tensor(bunch.target)


def image_data(recipe: Recipe, images: torch.Tensor, labels: torch.Tensor) -> Data:
    """Images (uint8 0-255, or float in [-1, 1]) and class labels, resized once to the recipe's
    size and split into train, validation and test: what an image dataset plugin returns."""
    cfg = recipe.dataset
    images = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()  # the models' dtype
    size = cfg.image_size
    if recipe.model.family == "dcgan" and not size and images.shape[-1] & (images.shape[-1] - 1):
        size = 1 << math.ceil(math.log2(images.shape[-1]))  # dcgan needs powers of two: 28 -> 32
    data = _split(_resize(images, size), labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if data.n_classes < 2:
        raise RecipeError(f"dataset {cfg.name} needs at least 2 classes (sub-folders) for the feature classifier")
    return data


def _mixture(recipe: Recipe, options: None) -> Data:
    cfg = recipe.dataset
    means, std = mixture_means(cfg.name)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = sample_mixture(means, std, cfg.n_train, gen)
    val = sample_mixture(means, std, cfg.n_val, gen)
    test = sample_mixture(means, std, cfg.n_test, gen)
    return Data("points", train, val, test=test, means=means, std=std)


digits = plugins.Dataset(lambda recipe, options: image_data(recipe, *_digits()), kind="image")
ring8 = plugins.Dataset(_mixture, kind="points")
grid25 = plugins.Dataset(_mixture, kind="points")
mnist = plugins.Dataset(lambda recipe, options: image_data(recipe, *formats.read_mnist(recipe.dataset.root)),
                        kind="image", needs_root=True)
cifar10 = plugins.Dataset(lambda recipe, options: image_data(recipe, *formats.read_cifar10(recipe.dataset.root)),
                          kind="image", needs_root=True)
imagefolder = plugins.Dataset(
    lambda recipe, options: image_data(recipe, *formats.read_image_folder(recipe.dataset.root, recipe.dataset.image_size)),
    kind="image", needs_root=True)


def load_data(recipe: Recipe) -> Data:
    """The recipe's dataset, from whichever ``ganstop.datasets`` plugin provides it."""
    name = recipe.dataset.name
    dataset = plugins.load("datasets", name)
    data = dataset.load(recipe, recipe.options(name))
    if not isinstance(data, Data) or data.kind != dataset.kind or data.test is None:
        raise RecipeError(f"dataset plugin {name!r} must return a ganstop.data.sets.Data of kind {dataset.kind!r} "
                          f"with train, val and test splits")
    return data
