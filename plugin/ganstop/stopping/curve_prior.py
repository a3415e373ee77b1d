"""A prior over GAN quality curves: synthetic FID-like curves with the shapes real GAN runs show,
the training data of the curve model (``curve_model``), as LC-PFN trains on samples of its prior.

LC-PFN's prior (three of Domhan's families, Gaussian noise) only knows curves that saturate;
GAN curves also rise first (StyleGAN2-ADA while its augmentation ramps up), sit on a plateau and
then fall by a third to a half, collapse after their best, drift up as the discriminator
overfits, wander in slow waves, and their noise scales with their level. Each shape is one
component added on a log scale (so noise and waves are shares of the level), each switched on
with its own probability (``Prior``), at a time drawn over the whole budget.

Curves are lower-is-better, positive, with one check per epoch and the budget at the last check;
the model sees only budget shares and values relative to the best, so neither the level nor the
spacing matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prior:
    """How often each shape appears, and the ranges its sizes and times are drawn from (log-
    uniform where a range spans decades). Sizes are in log units: 0.7 halves the metric."""

    checks: tuple[int, int] = (12, 400)  # checks in a run's budget (log-uniform)
    fall: tuple[float, float] = (0.1, 3.5)  # the first fall, e.g. FID 300 -> 10 is 3.4
    fall_scale: tuple[float, float] = (0.002, 0.15)  # its time scale, a share of the budget
    tail: tuple[float, float] = (0.01, 1.0)  # a slow second fall over the whole budget
    tail_scale: tuple[float, float] = (0.002, 3.0)
    tail_power: tuple[float, float] = (0.1, 2.0)
    pace: float = 0.5  # a power-law fall that goes on to the end of the budget (FID ~ epochs^-size) ...
    pace_size: tuple[float, float] = (0.01, 0.4)
    flat: float = 0.05  # no fall at all
    rise: float = 0.15  # first rises (an ADA-style warm-up) ...
    rise_size: tuple[float, float] = (0.05, 1.0)
    rise_at: tuple[float, float] = (0.01, 0.3)
    drop: float = 0.25  # a plateau, then a fall ...
    drop_at: tuple[float, float] = (0.05, 0.85)
    drop_size: tuple[float, float] = (0.05, 1.0)
    drop_scale: tuple[float, float] = (0.005, 0.3)
    collapse: float = 0.2  # a collapse after the best ...
    collapse_at: tuple[float, float] = (0.02, 0.95)
    collapse_size: tuple[float, float] = (0.1, 2.5)
    collapse_scale: tuple[float, float] = (0.002, 0.2)
    drift: float = 0.15  # a slow rise as the discriminator overfits
    drift_size: tuple[float, float] = (0.05, 1.0)
    waves: float = 0.5  # slow waves (an Ornstein-Uhlenbeck process) ...
    wave_size: tuple[float, float] = (0.005, 0.2)
    wave_length: tuple[float, float] = (0.02, 0.3)
    noise: tuple[float, float] = (0.003, 0.15)  # one check's noise, a share of the level
    heavy: float = 0.2  # Student-t noise with 3 degrees of freedom
    spikes: float = 0.1  # rare outlying checks


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))


def _after(u: np.ndarray, at: float, scale: float) -> np.ndarray:
    """0 before ``at``, then rising to 1 with time scale ``scale``."""
    return np.where(u > at, -np.expm1(-np.maximum(u - at, 0.0) / scale), 0.0)


def sample(rng: np.random.Generator, prior: Prior = Prior()) -> np.ndarray:
    """One curve's checks, epochs 1..n with the budget at n."""
    n = int(round(_log_uniform(rng, prior.checks)))
    u = np.arange(1, n + 1) / n
    y = np.zeros(n)
    if rng.random() >= prior.flat:
        y += rng.uniform(*prior.fall) * (1 + u / _log_uniform(rng, prior.fall_scale)) ** -rng.uniform(0.5, 3.0)
        y += _log_uniform(rng, prior.tail) * (1 + u / _log_uniform(rng, prior.tail_scale)) ** -rng.uniform(*prior.tail_power)
        if rng.random() < prior.pace:
            y -= _log_uniform(rng, prior.pace_size) * np.log(u)
    if rng.random() < prior.rise:
        at = _log_uniform(rng, prior.rise_at)
        y += _log_uniform(rng, prior.rise_size) * (u / at) * np.exp(1 - u / at)
    if rng.random() < prior.drop:
        y -= _log_uniform(rng, prior.drop_size) * _after(u, rng.uniform(*prior.drop_at), _log_uniform(rng, prior.drop_scale))
    if rng.random() < prior.collapse:
        y += _log_uniform(rng, prior.collapse_size) * _after(u, rng.uniform(*prior.collapse_at),
                                                             _log_uniform(rng, prior.collapse_scale))
    if rng.random() < prior.drift:
        y += _log_uniform(rng, prior.drift_size) * np.maximum(u - rng.uniform(0.1, 0.9), 0.0)
    if rng.random() < prior.waves:
        phi = math.exp(-1.0 / (n * _log_uniform(rng, prior.wave_length)))
        shocks = rng.normal(0.0, math.sqrt(1 - phi**2), n)
        wave = np.empty(n)
        wave[0] = rng.normal()
        for i in range(1, n):
            wave[i] = phi * wave[i - 1] + shocks[i]
        y += _log_uniform(rng, prior.wave_size) * wave
    sigma = _log_uniform(rng, prior.noise)
    y += sigma * (rng.standard_t(3, n) / math.sqrt(3) if rng.random() < prior.heavy else rng.normal(0.0, 1.0, n))
    if rng.random() < prior.spikes:
        hit = rng.random(n) < 0.03
        y += hit * np.array([_log_uniform(rng, (0.1, 1.0)) for _ in range(n)])
    return np.exp(y)
