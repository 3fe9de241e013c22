r"""The Laplace evidence as a closed-form function of the curvature's eigenvalues, for prior tuning.

When the posterior precision is diagonal in a basis that does not depend on the prior, its
log-determinant is a sum over the curvature's eigenvalues $h_m$:
$\log\det P = \sum_m \log(s\, h_m + \lambda_{g(m)})$, with $s$ the curvature scale
($1/T$, times $\sigma^{-2}$ for regression) and $g(m)$ the prior group of eigenvalue $m$. That
holds for

* ``diag``: the diagonal itself, each entry in its variable's group;
* ``kron`` with a scalar or layerwise prior: per block, the products $\alpha_i \gamma_j$ of its
  factors' eigenvalues (diagonal blocks: their entries), in the block's variable's group;
* ``full`` with a scalar prior: the curvature's eigenvalues, one group.

With $\log\det P_0 = \sum_g n_g \log\lambda_g$ and the prior term $\sum_g \lambda_g \lVert
\theta_g - \mu_g\rVert^2$, the evidence and its gradient in $(\log\lambda, \log\sigma)$ are a
few NumPy reductions over arrays of size $P$: tuning evaluates them with no TensorFlow op at all.
With $u_g = \log\lambda_g$, $v = \log\sigma$, $d_m = s h_m + \lambda_{g(m)}$ and $s \propto
\sigma^{-p}$ ($p$ the curvature's noise power),

$$\frac{\partial \log Z}{\partial u_g} = -\tfrac12 \Big(\sum_{m \in g} \frac{\lambda_g}{d_m} - n_g
+ \lambda_g \lVert\theta_g - \mu_g\rVert^2\Big), \qquad
\frac{\partial \log Z}{\partial v} = \frac{\partial \log p(y \mid \theta)}{\partial v}
+ \frac{p}{2} \sum_m \frac{s h_m}{d_m}.$$

Example:
    ```python
    >>> spectrum = curvature_spectrum(la, PriorStructure.LAYERWISE)   # None without a closed form
    >>> spectrum.log_marginal_likelihood(np.full(spectrum.n_groups, 2.0), sigma_noise=1.0)
    ```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from laplace_tf.networks.curvature import noise_power
from laplace_tf.networks.curvature.kron import DiagBlock
from laplace_tf.networks.curvature.lowrank import LowRankCurvature
from laplace_tf.options import CurvatureType, HessianStructure, PriorStructure
from laplace_tf.options import Likelihood as LikelihoodName


@dataclass
class CurvatureSpectrum:
    """Eigenvalues $h_m$ of the unit-scale curvature, each with its prior group; per group the
    number of parameters and their squared distance from the prior mean; and what the
    log-likelihood needs: the summed loss at unit noise, the temperature, and for regression the
    number of observations and the curvature's noise power (``None`` otherwise). Float64 NumPy."""

    eigenvalues: np.ndarray
    groups: np.ndarray
    sizes: np.ndarray
    squared_distance: np.ndarray
    loss: float
    temperature: float
    n_observations: int = 0
    noise_power: int | None = None

    @property
    def n_groups(self) -> int:
        return len(self.sizes)

    def log_marginal_likelihood(self, group_prior: Any, sigma_noise: float = 1.0) -> float:
        """The evidence at one prior precision per group (``(n_groups,)``) and ``sigma_noise``."""
        log_prior = np.log(np.asarray(group_prior, np.float64).reshape(-1))
        return self.evidence_and_gradient(log_prior, math.log(sigma_noise))[0]

    def evidence_and_gradient(self, log_prior: np.ndarray, log_sigma: float) -> tuple[float, np.ndarray, float]:
        """$\\log Z$, its gradient in the log prior precisions, and in $\\log\\sigma$."""
        prior, sigma = np.exp(log_prior), math.exp(log_sigma)
        regression = self.noise_power is not None
        scale = (sigma**-self.noise_power if regression else 1.0) / self.temperature
        scaled = scale * self.eigenvalues
        denominator = scaled + prior[self.groups]
        log_det = np.sum(np.log(denominator))
        quadratic = prior * self.squared_distance
        evidence = -0.5 * (log_det - np.dot(self.sizes, log_prior) + np.sum(quadratic))
        prior_share = prior * np.bincount(self.groups, 1.0 / denominator, minlength=self.n_groups)
        gradient_prior = -0.5 * (prior_share - self.sizes + quadratic)
        if not regression:
            return evidence - self.loss / self.temperature, gradient_prior, 0.0
        data_fit = self.loss / (sigma**2 * self.temperature)
        log_likelihood = -data_fit - self.n_observations * (log_sigma + 0.5 * math.log(2 * math.pi))
        gradient_sigma = 2 * data_fit - self.n_observations + 0.5 * self.noise_power * np.sum(scaled / denominator)
        return evidence + log_likelihood, gradient_prior, gradient_sigma


def curvature_spectrum(la: Any, structure: PriorStructure) -> CurvatureSpectrum | None:
    """The spectrum of a fitted Laplace for a scalar or layerwise prior, or ``None`` when its
    evidence has no such closed form (a per-parameter prior on kron or full, a layerwise or
    per-parameter prior on full, lowrank or gp, or an exact Hessian, which need not be positive
    semi-definite)."""
    if structure == PriorStructure.DIAG or la.curvature_type == CurvatureType.HESSIAN:
        return None
    variable = la.params.variable_index()
    if la.hessian_structure == HessianStructure.DIAG:
        eigenvalues, groups = la.curvature, variable
    elif la.hessian_structure == HessianStructure.KRON:
        eigenvalues, groups = _kron_eigenvalues(la._kron_eigenblocks())
    elif la.hessian_structure == HessianStructure.FULL and structure == PriorStructure.SCALAR:
        eigenvalues, groups = la._curvature_eigenvalues(), np.zeros(la.n_params, np.int64)
    elif (
        la.hessian_structure in (HessianStructure.LOWRANK, HessianStructure.GP)
        and structure == PriorStructure.SCALAR
        and isinstance(la.curvature, LowRankCurvature)  # not one GP per output, not Nystrom
    ):
        kept = np.asarray(la.curvature.eigenvalues, np.float64)  # the rest of the spectrum is zero
        eigenvalues, groups = np.pad(kept, (0, la.n_params - len(kept))), np.zeros(la.n_params, np.int64)
    else:
        return None
    if structure == PriorStructure.SCALAR:
        groups, variable = np.zeros_like(np.asarray(groups)), np.zeros_like(variable)
    n_groups = int(variable.max()) + 1
    offsets = np.asarray(la.mean, np.float64) - np.asarray(la.prior_mean, np.float64)
    regression = la.likelihood.name == LikelihoodName.REGRESSION
    return CurvatureSpectrum(
        eigenvalues=np.maximum(np.asarray(eigenvalues, np.float64), 0.0),
        groups=np.asarray(groups),
        sizes=np.bincount(variable, minlength=n_groups).astype(np.float64),
        squared_distance=np.bincount(variable, offsets**2, minlength=n_groups),
        loss=float(la._loss),
        temperature=float(la.temperature),
        n_observations=la.n_data * la.n_outputs if regression else 0,
        noise_power=noise_power(la.curvature_type) if regression else None,
    )


def _block_eigenvalues(block: Any) -> np.ndarray:
    if isinstance(block, DiagBlock):
        return np.asarray(block.diagonal, np.float64)
    return np.outer(np.asarray(block.input_values, np.float64), np.asarray(block.output_values, np.float64)).ravel()


def _kron_eigenvalues(blocks: list) -> tuple[np.ndarray, np.ndarray]:
    """Every block's eigenvalues, concatenated, and the index of the block (variable) of each."""
    values = [_block_eigenvalues(block) for block in blocks]
    groups = np.concatenate([np.full(len(v), index) for index, v in enumerate(values)])
    return np.concatenate(values), groups
