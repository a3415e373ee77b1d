"""What a metric curve can still reach by the end of its budget: the forecast criterion's model.

After Domhan, Springenberg & Hutter (IJCAI 2015): fit an ensemble of curve families to the
recent checks and stop when P(the rest of the budget beats the best by more than the tolerance)
is small. What makes it fit GAN curves and a per-check budget of milliseconds:

- Families linear in their two parameters, ``y = c + a * phi(u)`` with ``u = epoch / budget``:
  linear in time, log-linear (gains at even steps of log-epochs), power laws and exponentials
  (saturation). Each is a closed-form weighted least squares; no MCMC. ``u`` and a cap on how
  many checks count as independent (N_EFFECTIVE) make the forecast scale-free: the same curve
  over 50 or 500 epochs, checked every epoch or every 4th, gives the same forecast at the same
  share of its budget.
- The fit sees only the checks of the latest ``window`` share of the epochs so far (with the
  default 0.5, epochs t/2..t), so a curve is judged on what it does now.
- The noise is read off the curve itself, from the spread of its first differences (robust to
  the trend and to level shifts), so curves logged without ``<metric>_se`` work. A logged
  ``_se`` is not used: validation draws the same latents against the same reference every check,
  so most of a check's sampling error is shared with its neighbours (digits' ``fid_se`` is 10%
  of the FID while the curve moves by 1% from check to check). The noise has a floor of
  NOISE_FLOOR of the level (a smooth curve's differences would make any one family certain);
  Huber weights keep one spike from steering the fit. The families are weighted by that
  likelihood. A check soon is forecast as the level plus one check's noise; a check at the end
  also as anywhere in the family's residual spread (GAN curves wander in slow waves).
- A turn (``Fit.turned``) is read off the checks after the best, not the fit, which a robust
  fit follows only once most of its window has turned: it stops a run at once.

``criteria.Forecast`` stops a curve that has not turned only when the learned curve model
(``curve_model``) agrees: the fit knows this curve's own trend, the model how GAN curves go on
(a plateau that falls by a third after a quarter of the budget, a rise before the fall). The
model took the place of three hand-set rules: no flat stop before a fifth of the budget, and
two "still learning" paces (the best's and the level's, carried on to the end of the budget).

Chosen on the even-indexed real curves of ``benchmarks/curves`` (the constants here, and the
recipe defaults tolerance 0.05, confidence 0.1, forecast_window 0.5), on digits seeds 10-15
(UNDONE) and on the 2D recipes' seeds 100-104 (UNDONE, ``training.optim.ANNEALED``); see
docs/benchmarks.md. The forecast is oriented "lower is better"; the stopper negates a metric
to maximize.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

import numpy as np

# phi of each family y = c + a * phi(u): linear in time, log-linear, power laws, exponentials
FAMILIES = {"linear": lambda u: -u, "log": lambda u: -np.log(u),
            **{f"pow{b:g}": (lambda u, b=b: np.power(u, -b)) for b in (0.5, 1.0, 2.0)},
            **{f"exp{tau:g}": (lambda u, tau=tau: np.exp(-u / tau)) for tau in (0.1, 0.3)}}
HUBER = 2.0  # residuals beyond this many noise units count linearly, not squared
MIN_CHECKS = 5  # fewer checks in the window: no forecast
N_EFFECTIVE = 10  # a window's checks count as at most this many independent ones
TURN = 3.0  # a turn: worse than the best by the tolerance plus this many times the noise or wander ...
TURN_SHARE = 0.125  # ... on the median of the checks after the best in this latest share of the epochs
UNDONE = 0.25  # ... and undid this share of the progress from the first check to the best
NOISE_FLOOR = 0.02  # no check is known better than this share of its value
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, eq=False)
class Fit:
    """Per family: its weight, and the mean and standard error of a check's value now and at
    the end of the budget (the noise of one check included)."""

    weights: np.ndarray
    now: np.ndarray
    end: np.ndarray
    se_now: np.ndarray
    se_end: np.ndarray
    noise: float  # one check's noise
    wander: float  # the spread of the checks around the fitted trend (family-weighted)

    def p_gain(self, best: float, tolerance: float) -> float:
        """P(a check between now and the end beats ``best`` by more than ``tolerance`` x |best|),
        read at whichever end of the remaining budget is likelier (each family is monotone)."""
        bar = best - tolerance * abs(best)  # plain floats: a replay search asks this a million times
        return sum(w * max(_cdf((bar - now) / se_now), _cdf((bar - end) / se_end))
                   for w, now, end, se_now, se_end in self._rows)

    @functools.cached_property
    def _rows(self) -> list[tuple[float, float, float, float, float]]:
        return list(zip(*(a.tolist() for a in (self.weights, self.now, self.end, self.se_now, self.se_end))))

    def turned(self, since_best: list[float], best: float, tolerance: float, first: float) -> bool:
        """The latest checks after the best (``since_best``: those of the latest TURN_SHARE of the
        epochs so far, at least 3) sit, on median, worse than ``best`` by more than the tolerance
        plus TURN times the noise or the wander around the trend, whichever is larger, and by at
        least UNDONE of the progress from the ``first`` check to the best: the curve rose from its
        best (collapse, overfitting) and stayed up, rather than flattened or wobbled. The real
        collapses in benchmarks/curves undid 45% or more of their progress; a wobble of 10% on a
        digits FID that had fallen from 750 to 50 undid 1% (and stopped a run at epoch 22 of 450
        without this test). The robust fit follows a turn only once most of its window has
        turned, so this looks at the checks themselves."""
        if len(since_best) < 3:
            return False
        rise = statistics.median(since_best) - best
        return rise > tolerance * abs(best) + TURN * max(self.noise, self.wander) and rise >= UNDONE * (first - best)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def noise(values: np.ndarray) -> float:
    """One check's noise: the robust spread of first differences over sqrt(2), so a trend (a
    near-constant difference) or a step (one outlying difference) barely moves it."""
    diffs = np.diff(values)
    if diffs.size < 2:
        return 0.0
    return float(_MAD_TO_SIGMA * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def fit(epochs: np.ndarray, values: np.ndarray, budget: int, window: float = 0.5) -> Fit | None:
    """The forecast at the last of ``epochs`` (ascending, >= 1) for a budget ending at epoch
    ``budget``; None while the window holds fewer than MIN_CHECKS checks."""
    epochs, values = np.asarray(epochs, float), np.asarray(values, float)
    first = int(np.searchsorted(epochs, (1 - window) * epochs[-1], side="left"))
    u, y = epochs[first:] / budget, values[first:]
    if y.size < MIN_CHECKS:
        return None
    sigma = max(noise(y), NOISE_FLOOR * float(np.median(np.abs(y))), 1e-12)
    ends = np.array([u[-1], max(1.0, u[-1])])
    thin = max(1.0, y.size / N_EFFECTIVE)  # checks beyond N_EFFECTIVE add no information
    weights, now, end, se_now, se_end, wanders = [], [], [], [], [], []
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
            # a check soon is the level plus one check's noise; one at the end of a long horizon may
            # also sit anywhere in the slow waves GAN curves wander in around their trend
            wander = max(sigma, _MAD_TO_SIGMA * float(np.median(resid)))
            spread = np.sqrt(sigma**2 * leverage + np.array([sigma, wander]) ** 2)
            wanders.append(wander)
            weights.append(-loss.sum() / (thin * sigma**2))
            now.append(mean[0]), end.append(mean[1]), se_now.append(spread[0]), se_end.append(spread[1])
    if not weights:
        return None
    logw = np.array(weights)
    w = np.exp(logw - logw.max())
    w = w / w.sum()
    return Fit(w, np.array(now), np.array(end), np.array(se_now), np.array(se_end),
               sigma, float(w @ np.array(wanders)))
