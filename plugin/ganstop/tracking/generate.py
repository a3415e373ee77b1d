"""Samples from a logged or registered generator, written as a picture and raw numbers."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from ganstop.tracking import plots
from ganstop.tracking.evaluator import sample
from ganstop.errors import RecipeError, first_line
from ganstop.tracking.store import check_reachable


def load(model_uri: str):
    if model_uri.startswith(("models:/", "runs:/")):
        check_reachable()
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise RecipeError(f"cannot load {model_uri}: {first_line(exc)}") from None
    except OSError as exc:
        raise RecipeError(f"cannot load {model_uri}: {exc.strerror or exc}") from None


def generate(model_uri: str, n: int, seed: int, out: Path, out_npy: Path | None = None) -> np.ndarray:
    """A grid PNG (images) or scatter PNG (2D points) of n seeded samples; optionally the .npy."""
    samples = sample(load(model_uri), n, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if samples.ndim == 4:
        buf = io.BytesIO()
        plots.image_grid(torch.from_numpy(samples)).save(buf, format="PNG")
        out.write_bytes(buf.getvalue())
    elif samples.ndim == 2 and samples.shape[1] == 2:
        out.write_bytes(plots.scatter(torch.from_numpy(samples), None, f"{n} samples from {model_uri}"))
    else:
        raise RecipeError(f"{model_uri} generates samples of shape {samples.shape[1:]}, not images or 2D points")
    if out_npy:
        np.save(out_npy, samples)
    return samples
