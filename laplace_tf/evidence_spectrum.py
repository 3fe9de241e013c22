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

With $\log\det P_0 = \sum_v n_v \log\lambda_v$ and the prior term $\sum_v \lambda_v \lVert
\theta_v - \mu_v\rVert^2$, the evidence is a few reductions over arrays of size $P$: tuning
evaluates it eagerly, with no ``tf.function`` to trace.

Example:
    ```python
    >>> spectrum = curvature_spectrum(la)          # None when the structure has no such form
    >>> spectrum.log_marginal_likelihood(la, tf.fill([spectrum.n_groups], 2.0), la.sigma_noise)
    ```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.curvature.kron import DiagBlock
from laplace_tf.options import CurvatureType, HessianStructure, PriorStructure


@dataclass
class CurvatureSpectrum:
    """Eigenvalues of the unit-scale curvature, each with its prior group, and per group the
    number of parameters and their squared distance from the prior mean."""

    eigenvalues: tf.Tensor
    groups: tf.Tensor
    sizes: tf.Tensor
    squared_distance: tf.Tensor

    @property
    def n_groups(self) -> int:
        return int(self.sizes.shape[0])

    def log_marginal_likelihood(self, la: Any, group_prior: tf.Tensor, sigma_noise: tf.Tensor) -> tf.Tensor:
        """The evidence at one prior precision per group (``(n_groups,)``) and ``sigma_noise``."""
        scale = la._curvature_scale(sigma_noise)
        log_det = tf.reduce_sum(tf.math.log(scale * self.eigenvalues + tf.gather(group_prior, self.groups)))
        log_det_prior = tf.reduce_sum(self.sizes * tf.math.log(group_prior))
        quadratic = tf.reduce_sum(group_prior * self.squared_distance)
        return la.log_likelihood(sigma_noise) - 0.5 * (log_det - log_det_prior + quadratic)


def curvature_spectrum(la: Any, structure: PriorStructure) -> CurvatureSpectrum | None:
    """The spectrum of a fitted Laplace for a scalar or layerwise prior, or ``None`` when its
    evidence has no such closed form (a per-parameter prior on kron or full, a layerwise prior on
    full, lowrank, or an exact Hessian, which need not be positive semi-definite)."""
    if structure == PriorStructure.DIAG or la.curvature_type == CurvatureType.HESSIAN:
        return None
    variable = la.params.variable_index()
    if la.hessian_structure == HessianStructure.DIAG:
        eigenvalues, groups = la.curvature, variable
    elif la.hessian_structure == HessianStructure.KRON:
        eigenvalues, groups = _kron_eigenvalues(la._kron_eigenblocks())
    elif la.hessian_structure == HessianStructure.FULL and structure == PriorStructure.SCALAR:
        eigenvalues, groups = la._curvature_eigenvalues(), np.zeros(la.n_params, np.int64)
    else:
        return None
    if structure == PriorStructure.SCALAR:
        groups, variable = np.zeros_like(np.asarray(groups)), np.zeros_like(variable)
    n_groups = int(variable.max()) + 1
    distance = tf.math.unsorted_segment_sum(tf.square(la.mean - la.prior_mean), variable, n_groups)
    sizes = np.bincount(variable, minlength=n_groups).astype(la.dtype.as_numpy_dtype)
    return CurvatureSpectrum(
        tf.maximum(tf.cast(eigenvalues, la.dtype), 0.0), tf.constant(groups), tf.constant(sizes), distance
    )


def _block_eigenvalues(block: Any) -> tf.Tensor:
    if isinstance(block, DiagBlock):
        return block.diagonal
    return tf.reshape(block.input_values[:, None] * block.output_values[None, :], [-1])


def _kron_eigenvalues(blocks: list) -> tuple[tf.Tensor, np.ndarray]:
    """Every block's eigenvalues, concatenated, and the index of the block (variable) of each."""
    values = [_block_eigenvalues(block) for block in blocks]
    groups = np.concatenate([np.full(int(v.shape[0]), index) for index, v in enumerate(values)])
    return tf.concat(values, axis=0), groups
