"""``npz``: a team's own images from one ``.npz`` file (``images``: N x C x H x W uint8 or floats
in [-1, 1]; ``labels``: N class ids, which train the feature network FID/KID are computed on).

``dataset.root`` is the folder; ``npz.file`` names the file in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganstop.data.sets import image_data
from ganstop.errors import RecipeError
from ganstop.plugins import Dataset
from ganstop.recipe import Recipe, Section


class NpzOptions(Section):
    file: str = "data.npz"


def load(recipe: Recipe, options: NpzOptions):
    path = Path(recipe.dataset.root) / options.file
    try:
        with np.load(path) as archive:
            images, labels = archive["images"], archive["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise RecipeError(f"dataset npz: cannot read images and labels from {path}: {exc}") from None
    if images.ndim != 4 or len(images) != len(labels):
        raise RecipeError(f"dataset npz: {path} must hold images N x C x H x W and N labels, "
                          f"not {images.shape} and {labels.shape}")
    return image_data(recipe, torch.from_numpy(images), torch.from_numpy(labels).long())


npz = Dataset(load, kind="image", options=NpzOptions, needs_root=True)
