"""What a metric curve can still reach by the end of its budget: the forecast criterion's model.

After Domhan, Springenberg & Hutter (IJCAI 2015): fit an ensemble of saturating curve families
to the recent checks and stop when P(the rest of the budget beats the best by more than the
tolerance) is small. What makes it fit GAN curves and a per-check budget of milliseconds:

- Families linear in their two parameters, ``y = c + a * phi_b(u)`` with ``u = epoch / budget``
  and ``phi_b = u**-b`` (``-log u`` for b = 0: gains at even steps of log-epochs). Each is a
  closed-form weighted least squares; no MCMC. ``u`` makes the fit scale-free: the same curve
  over 50 or 500 epochs gives the same forecast at the same share of its budget.
- The fit sees only the checks of the latest ``window`` share of the epochs so far (with the
  default 0.5, epochs t/2..t), so a curve that turned (mode collapse, a discriminator
  overfitting) is judged on what it does now, and the families fit it with a rising ``a``.
- The noise is read off the curve itself, from the spread of its first differences (robust to
  the trend and to level shifts), so curves logged without ``<metric>_se`` work, with a floor of
  NOISE_FLOOR of the level (a smooth curve's differences would make any one family certain);
  Huber weights keep one spike from steering the fit. The families are weighted by that
  likelihood, and each one's forecast carries the noise of one check.
- Before EARLIEST of the budget only a turn stops a run: a plateau at 4% of a budget says little
  about the other 96% (digits' FID sits still for a dozen epochs before falling by half).

Chosen on the even-indexed real curves of ``benchmarks/curves`` (the constants here, and the
recipe defaults tolerance 0.05, confidence 0.05, forecast_window 0.5); see docs/benchmarks.md.

The forecast is oriented "lower is better"; the stopper negates a metric to maximize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

# phi of each family y = c + a * phi(u): linear in time, log-linear, power laws, exponentials
FAMILIES = {"linear": lambda u: -u, "log": lambda u: -np.log(u),
            **{f"pow{b:g}": (lambda u, b=b: np.power(u, -b)) for b in (0.5, 1.0, 2.0)},
            **{f"exp{tau:g}": (lambda u, tau=tau: np.exp(-u / tau)) for tau in (0.1, 0.3)}}
HUBER = 2.0  # residuals beyond this many noise units count linearly, not squared
MIN_CHECKS = 5  # fewer checks in the window: no forecast
N_EFFECTIVE = 10  # a window's checks count as at most this many independent ones
EARLIEST = 0.1  # share of the budget before which only a turn stops
NOISE_FLOOR = 0.02  # no check is known better than this share of its value
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Fit:
    """Per family: its weight, and the mean and standard error of a check's value now and at
    the end of the budget (the noise of one check included)."""

    weights: np.ndarray
    now: np.ndarray
    end: np.ndarray
    se_now: np.ndarray
    se_end: np.ndarray
    level_se: np.ndarray  # standard error of each family's mean level now (the noise of one check left out)
    share: float  # the share of the budget elapsed
    noise: float

    def p_gain(self, best: float, tolerance: float) -> float:
        """P(a check between now and the end beats ``best`` by more than ``tolerance`` x |best|),
        read at whichever end of the remaining budget is likelier (each family is monotone)."""
        bar = best - tolerance * abs(best)
        p = np.maximum(ndtr((bar - self.now) / self.se_now), ndtr((bar - self.end) / self.se_end))
        return float(self.weights @ p)

    def turned(self, best: float, tolerance: float) -> bool:
        """The curve now sits worse than ``best`` by more than the tolerance and two standard
        errors of its level: it rose from its best (collapse, overfitting), not just flattened."""
        level, se = float(self.weights @ self.now), float(self.weights @ self.level_se)
        return level - best > tolerance * abs(best) + 2 * se

    def no_gain(self, best: float, tolerance: float, confidence: float) -> bool:
        """The forecast's verdict: a gain beyond the tolerance is less likely than ``confidence``.
        Before EARLIEST of the budget only a turn may end a run: a GAN's early plateau is no
        evidence about the rest of a long budget, while a collapse is."""
        if self.p_gain(best, tolerance) >= confidence:
            return False
        return self.share >= EARLIEST or self.turned(best, tolerance)


def noise(values: np.ndarray) -> float:
    """One check's noise: the robust spread of first differences over sqrt(2), so a trend (a
    near-constant difference) or a step (one outlying difference) barely moves it."""
    diffs = np.diff(values)
    if diffs.size < 2:
        return 0.0
    return float(_MAD_TO_SIGMA * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def fit(epochs: np.ndarray, values: np.ndarray, budget: int, window: float = 0.5,
        se: np.ndarray | None = None) -> Fit | None:
    """The forecast at the last of ``epochs`` (ascending, >= 1) for a budget ending at epoch
    ``budget``; None while the window holds fewer than MIN_CHECKS checks. ``se``, when the
    metric logs one, is a floor under the curve's own noise estimate."""
    epochs, values = np.asarray(epochs, float), np.asarray(values, float)
    first = int(np.searchsorted(epochs, (1 - window) * epochs[-1], side="left"))
    u, y = epochs[first:] / budget, values[first:]
    if y.size < MIN_CHECKS:
        return None
    sigma = noise(y)
    if se is not None and np.all(np.isfinite(se[first:])):
        sigma = max(sigma, float(np.sqrt(np.mean(np.square(se[first:])))))
    sigma = max(sigma, NOISE_FLOOR * float(np.median(np.abs(y))), 1e-12)
    ends = np.array([u[-1], max(1.0, u[-1])])
    thin = max(1.0, y.size / N_EFFECTIVE)  # checks beyond N_EFFECTIVE add no information
    weights, now, end, se_now, se_end, level_se = [], [], [], [], [], []
    for phi in FAMILIES.values():
        design = np.column_stack([np.ones_like(u), phi(u)])
        w = np.ones_like(y)
        for _ in range(3):  # iteratively reweighted least squares with Huber weights
            gram = (design * w[:, None]).T @ design
            if abs(np.linalg.det(gram)) < 1e-300:
                break
            cov = np.linalg.inv(gram)
            coef = cov @ ((design * w[:, None]).T @ y)
            resid = np.abs(y - design @ coef)
            w = np.minimum(1.0, HUBER * sigma / np.maximum(resid, 1e-300))
        else:
            loss = np.where(resid <= HUBER * sigma, 0.5 * resid**2, HUBER * sigma * resid - 0.5 * (HUBER * sigma) ** 2)
            at = np.column_stack([np.ones(2), phi(ends)])
            mean = at @ coef
            leverage = thin * np.maximum(np.einsum("ij,jk,ik->i", at, cov, at), 0.0)
            spread = sigma * np.sqrt(leverage + 1.0)
            weights.append(-loss.sum() / (thin * sigma**2))
            now.append(mean[0]), end.append(mean[1]), se_now.append(spread[0]), se_end.append(spread[1])
            level_se.append(sigma * math.sqrt(leverage[0]))
    if not weights:
        return None
    logw = np.array(weights)
    w = np.exp(logw - logw.max())
    return Fit(w / w.sum(), np.array(now), np.array(end), np.array(se_now), np.array(se_end), np.array(level_se),
               float(u[-1]), sigma)
