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
from pathlib import Path

import numpy as np
import torch

from ganstop.recipe import Recipe, RecipeError

POINT_DATASETS = ("ring8", "grid25")


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


def _torchvision(name: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import torchvision
    except ImportError:
        raise RecipeError(f"dataset {name} needs torchvision: pip install 'mlflow-ganstop[vision]'") from None
    try:
        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.CIFAR10
        ds = cls(root, train=True, download=False)
    except RuntimeError as exc:  # torchvision's "Dataset not found" and friends
        raise RecipeError(f"dataset {name} could not be read from {root!r}: {str(exc).splitlines()[0]}") from None
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images, torch.as_tensor(ds.targets)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _image_folder(root: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``root/<class>/<image>`` (torchvision's ImageFolder layout), read with Pillow: each image
    square-cropped at its centre and resized to ``size`` as it is read, so a folder of large
    photos never sits in memory at full size (0: the smallest image's side)."""
    from PIL import Image

    classes = sorted(d for d in Path(root).iterdir() if d.is_dir())
    files = [(path, label) for label, folder in enumerate(classes) for path in sorted(folder.rglob("*"))
             if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise RecipeError(f"dataset.root {root!r} holds no images in class folders (root/<class>/<image>.png)")
    side = size
    if not side:
        side = min(min(Image.open(path).size) for path, _ in files)
    images = []
    for path, _ in files:
        with Image.open(path) as image:
            width, height = image.size
            edge = min(width, height)
            box = ((width - edge) // 2, (height - edge) // 2, (width + edge) // 2, (height + edge) // 2)
            square = image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS, box=box)
        images.append(torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1))
    return torch.stack(images), torch.tensor([label for _, label in files])


def load_data(recipe: Recipe) -> Data:
    cfg = recipe.dataset
    if cfg.name in POINT_DATASETS:
        means, std = mixture_means(cfg.name)
        gen = torch.Generator().manual_seed(cfg.seed)
        train = sample_mixture(means, std, cfg.n_train, gen)
        val = sample_mixture(means, std, cfg.n_val, gen)
        test = sample_mixture(means, std, cfg.n_test, gen)
        return Data("points", train, val, test=test, means=means, std=std)
    if cfg.name == "digits":
        images, labels = _digits()
    elif not Path(cfg.root).is_dir():
        raise RecipeError(f"dataset {cfg.name}: dataset.root {cfg.root!r} is not a folder")
    else:
        raw = _image_folder(cfg.root, cfg.image_size) if cfg.name == "imagefolder" else _torchvision(cfg.name, cfg.root)
        images, labels = raw[0].float() / 127.5 - 1, raw[1]
    size = cfg.image_size
    if recipe.model.family == "dcgan" and not size and images.shape[-1] & (images.shape[-1] - 1):
        size = 1 << math.ceil(math.log2(images.shape[-1]))  # dcgan needs powers of two: 28 -> 32
    data = _split(_resize(images, size), labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    if data.n_classes < 2:
        raise RecipeError(f"dataset {cfg.name} needs at least 2 classes (sub-folders) for the feature classifier")
    return data
