"""A learned model of how a GAN's quality curve goes on: given the checks so far and the budget,
the distribution of the best value the rest of the budget will reach.

After LC-PFN (Adriaensen et al., NeurIPS 2023): a small network trained on curves sampled from
a prior (``curve_prior``: GAN shapes, not only saturation) and on real GAN runs, which answers
in one forward pass instead of fitting curve families. Its input is scale-free (``features``):
the checks as log-ratios to the best so far, averaged into CELLS equal cells of the epochs so
far, the best so far at each cell's end, the share of the budget elapsed, the age of the best
and the check-to-check noise; so the same curve over 50 or 500 epochs, checked every epoch or
every 4th, gets the same forecast at the same share of its budget. Its output is a histogram
(LC-PFN's "bar distribution") over the relative gain of the final best over the best so far,
``g = (best - final best) / |best|``, on the fixed bin EDGES; ``p_gain`` reads P(g > tolerance)
off it for any tolerance.

The weights (``curve_model.pt``, a state dict of tensors) are trained by
``python -m ganstop.stopping.train_curve_model`` from a seed and ship in the package. They are
loaded with ``torch.load(weights_only=True)`` (no pickle runs) once per process and turned into
numpy arrays; the forward pass is numpy (a 1,000-check history costs well under a millisecond).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("curve_model.pt")
CELLS = 16  # cells of the epochs so far the checks are averaged into ...
RECENT, RECENT_CELLS = 0.25, 8  # ... and cells of the latest quarter of them, where the pace is read
# bins of the relative gain g of the final best over the best so far; the last is open
EDGES = np.array([0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12, 0.15,
                  0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
N_FEATURES = 2 * CELLS + RECENT_CELLS + 6
MIN_CHECKS = 5  # fewer checks: no forecast
_CAP = 8.0  # log-ratios beyond this (3,000x the best) carry no more information
_MAD_TO_SIGMA = 1.4826


def features(epochs: np.ndarray, values: np.ndarray, budget: float) -> np.ndarray:
    """The model's input for checks at ``epochs`` (ascending, >= 1) with ``values`` oriented
    lower-is-better, for a budget ending at epoch ``budget``."""
    epochs, values = np.asarray(epochs, float), np.asarray(values, float)
    t = epochs[-1]
    best = values.min()
    scale = max(abs(best), 1e-12)
    level = np.minimum(np.log1p(np.maximum(values - best, 0.0) / scale), _CAP)
    running = np.minimum(np.log1p((np.minimum.accumulate(values) - best) / scale), _CAP)
    where = epochs / t
    cells = _cells(where, level, 0.0, CELLS)
    recent = _cells(where, level, 1 - RECENT, RECENT_CELLS)
    ends = (np.arange(CELLS) + 1) / CELLS
    last = np.searchsorted(where, ends + 1e-9, side="right") - 1
    best_at = np.where(last >= 0, running[np.maximum(last, 0)], running[0])
    diffs = np.diff(level[len(level) // 2:])
    noise = _MAD_TO_SIGMA * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2) if diffs.size >= 2 else 0.0
    u = min(t / budget, 1.0)
    age = 1.0 - epochs[int(np.argmin(values))] / t
    return np.concatenate([cells, recent, best_at, [u, math.log(u), age, math.log(noise + 1e-3), level[-1],
                                           math.log(budget / t + 1e-12) * (noise + 0.01)]]).astype(np.float32)


def _cells(where: np.ndarray, level: np.ndarray, start: float, n: int) -> np.ndarray:
    """The mean level in each of ``n`` equal cells of the epochs so far from ``start`` of them on
    (``where``: each check's epoch as a share of the latest); an empty cell is interpolated."""
    cell = np.ceil((where - start) / (1 - start) * n).astype(int) - 1
    inside = cell >= 0
    counts = np.bincount(np.minimum(cell[inside], n - 1), minlength=n)
    sums = np.bincount(np.minimum(cell[inside], n - 1), weights=level[inside], minlength=n)
    centres = start + (np.arange(n) + 0.5) / n * (1 - start)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.interp(centres, where, level))


@functools.lru_cache(maxsize=None)
def load(path: Path = WEIGHTS) -> "CurveModel":
    """The shipped model (or another state dict saved by the training script), loaded once."""
    import torch  # only the weights' file needs it; the forward pass is numpy

    state = torch.load(path, map_location="cpu", weights_only=True)
    return CurveModel({name: tensor.double().numpy() for name, tensor in state.items()})


class CurveModel:
    """An MLP (``layers.<i>.weight/bias``, ReLU between) from ``features`` to logits over the
    gain bins, with the features' mean and spread (``mean``, ``std``) to standardise them."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.mean, self.std = state["mean"], state["std"]
        n = len({k.split(".")[1] for k in state if k.startswith("layers.")})
        self.layers = [(state[f"layers.{i}.weight"].T.copy(), state[f"layers.{i}.bias"]) for i in range(n)]

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, float) - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def p_gain(self, epochs: np.ndarray, values: np.ndarray, budget: float, tolerance: float) -> float:
        """P(the rest of the budget beats the best so far by more than ``tolerance`` x |best|)."""
        return exceeds(self.probabilities(features(epochs, values, budget)), tolerance)


def forecast(epochs, values, budget: float, model: "CurveModel | None" = None) -> np.ndarray | None:
    """The bin probabilities of the gain the rest of the budget makes, for checks at ``epochs``
    with ``values`` oriented lower-is-better; None with fewer than MIN_CHECKS checks."""
    if len(values) < MIN_CHECKS:
        return None
    return (model or load()).probabilities(features(epochs, values, budget))


def exceeds(probabilities: np.ndarray, tolerance: float) -> float:
    """P(g > tolerance) from the bin probabilities, uniform within each bin (the open last bin
    holds gains beyond EDGES[-1])."""
    k = int(np.searchsorted(EDGES, tolerance, side="right"))  # tolerance lies in bin k - 1
    if k >= len(EDGES):
        return float(probabilities[-1])
    inside = (EDGES[k] - tolerance) / (EDGES[k] - EDGES[k - 1])
    return float(probabilities[k - 1] * inside + probabilities[k:].sum())


def target(values: np.ndarray, n: int) -> float:
    """The relative gain g of the final best over the best of the first ``n`` checks."""
    best = values[:n].min()
    return max(0.0, (best - values[n:].min()) / max(abs(best), 1e-12)) if n < len(values) else 0.0


def bin_of(gain: float) -> int:
    """The index of the bin ``gain`` falls in; no gain at all is bin 0."""
    return min(int(np.searchsorted(EDGES, gain, side="right")) - 1, len(EDGES) - 1)
