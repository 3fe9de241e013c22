r"""Calibration metrics for Gaussian regression predictives $y_{nk} \sim \mathcal{N}(\mu_{nk}, s^2_{nk})$.

``mean`` and ``variance`` are the predictive's mean and variance, observation noise included
(for a Laplace: ``f_var + sigma_noise**2``), shaped ``(N,)`` or ``(N, K)`` like the targets. Every
output of every example is one scalar Gaussian; with $z_\alpha = \Phi^{-1}(\frac{1+\alpha}2)$:

* RMSE: $\sqrt{\frac{1}{NK}\sum (y - \mu)^2}$;
* NLL: $\frac1N \sum_n \sum_k -\log \mathcal{N}(y_{nk}; \mu_{nk}, s^2_{nk})$ (per example);
* CRPS: the mean over outputs of $\int (F(t) - [t \ge y])^2 dt
  = s \left(z (2\Phi(z) - 1) + 2\varphi(z) - \frac{1}{\sqrt\pi}\right)$, $z = \frac{y-\mu}{s}$;
* coverage at level $\alpha$: the fraction with $|y - \mu| \le z_\alpha s$, which a
  calibrated predictive makes $\alpha$; the calibration error is the mean of
  $|\mathrm{coverage}(\alpha) - \alpha|$ over the levels;
* sharpness: the mean width $2 z_\alpha s$ of those central intervals.

Example:
    ```python
    >>> coverage(np.zeros(4), np.ones(4), np.array([0.1, -0.5, 1.0, 3.0]), levels=[0.5, 0.95])
    {0.5: 0.5, 0.95: 0.75}
    ```
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import tensorflow_probability as tfp

DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)


def root_mean_squared_error(mean: Any, y: Any) -> float:
    """RMSE of the predictive mean over all outputs of all examples."""
    mean, y = _checked_pair(mean, y)
    return float(np.sqrt(np.mean((y - mean) ** 2)))


def gaussian_negative_log_likelihood(mean: Any, variance: Any, y: Any) -> float:
    """The mean over examples of the Gaussian NLL, summed over an example's outputs."""
    mean, variance, y = checked_gaussian(mean, variance, y)
    nll = 0.5 * (np.log(2 * np.pi * variance) + (y - mean) ** 2 / variance)
    return float(np.mean(np.sum(nll.reshape(len(y), -1), axis=1)))


def continuous_ranked_probability_score(mean: Any, variance: Any, y: Any) -> float:
    """The Gaussian CRPS in closed form, averaged over outputs (lower is better; units of ``y``)."""
    mean, variance, y = checked_gaussian(mean, variance, y)
    scale = np.sqrt(variance)
    z = (y - mean) / scale
    standard_normal = tfp.distributions.Normal(np.float64(0.0), np.float64(1.0))
    cdf = standard_normal.cdf(z).numpy()
    pdf = standard_normal.prob(z).numpy()
    return float(np.mean(scale * (z * (2 * cdf - 1) + 2 * pdf - 1 / np.sqrt(np.pi))))


def coverage(mean: Any, variance: Any, y: Any, levels: Sequence[float] = DEFAULT_LEVELS) -> dict[float, float]:
    """The fraction of targets inside the central interval of each level."""
    mean, variance, y = checked_gaussian(mean, variance, y)
    distance = np.abs(y - mean) / np.sqrt(variance)
    return {level: float(np.mean(distance <= _half_width(level))) for level in _checked_levels(levels)}


def coverage_calibration_error(mean: Any, variance: Any, y: Any, levels: Sequence[float] = DEFAULT_LEVELS) -> float:
    """The mean absolute gap between coverage and level over ``levels``."""
    covered = coverage(mean, variance, y, levels)
    return float(np.mean([abs(fraction - level) for level, fraction in covered.items()]))


def interval_width(variance: Any, levels: Sequence[float] = DEFAULT_LEVELS) -> dict[float, float]:
    """Sharpness: the mean width of each level's central interval."""
    variance = _checked_variance(variance)
    scale = np.mean(np.sqrt(variance))
    return {level: float(2 * _half_width(level) * scale) for level in _checked_levels(levels)}


def _half_width(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def _checked_levels(levels: Sequence[float]) -> list[float]:
    levels = [float(level) for level in np.atleast_1d(levels)]
    if not levels or not all(0 < level < 1 for level in levels):
        raise ValueError(f"levels must be probabilities strictly between 0 and 1, got {levels}.")
    return levels


def _checked_variance(variance: Any) -> np.ndarray:
    variance = np.asarray(variance, dtype=np.float64)
    if variance.size == 0 or not np.all(np.isfinite(variance)) or variance.min() <= 0:
        raise ValueError("variance must be finite and positive; include the observation noise (f_var + sigma**2).")
    return variance


def _checked_pair(mean: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    mean, y = np.asarray(mean, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if mean.ndim == 2 and y.ndim == 1 and mean.shape[1] == 1:
        y = y[:, None]
    if mean.shape != y.shape or mean.ndim not in (1, 2) or len(y) == 0:
        raise ValueError(f"mean and y must both be (N,) or (N, K); got {mean.shape} and {y.shape}.")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(y))):
        raise ValueError("mean and y must be finite (no NaN or inf).")
    return mean, y


def checked_gaussian(mean: Any, variance: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated float64 ``mean``, ``variance`` and ``y`` of one shape, ``(N,)`` or ``(N, K)``."""
    mean, y = _checked_pair(mean, y)
    variance = _checked_variance(variance)
    if variance.shape != mean.shape:
        raise ValueError(f"variance must have the shape of mean, {mean.shape}; got {variance.shape}.")
    return mean, variance, y
