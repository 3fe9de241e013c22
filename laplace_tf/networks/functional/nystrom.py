r"""The Nyström (ELLA) posterior: a Gaussian on the span of ``K`` kernel eigenfunctions.

With the orthonormal feature basis $V \in \mathbb{R}^{P \times K}$, the GGN in it
$C = V^\top G V$, curvature scale $s$ and a scalar prior precision $\delta$, the weights are
$\theta = \theta_* + V \beta / \sqrt\delta$ with $\beta \sim \mathcal{N}(0, S)$,
$S^{-1} = I + s C / \delta = Q \operatorname{diag}(m) Q^\top$. So the covariance is
$F F^\top$ with $F = V Q \operatorname{diag}(m^{-1/2}) / \sqrt\delta$ (rank ``K``), the
predictive covariance $J F (J F)^\top$, and draws $\theta_* + F z$. Being of rank ``K``, it has no
density over all ``P`` weights: no ``log_prob`` and no evidence (tune the prior by grid search).

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="gp", n_subset=500, n_eigenvalues=50)
    >>> la.fit((x, y)).posterior.functional_variance(jacobians)
    ```
"""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.functional.gp import NystromCurvature
from laplace_tf.networks.functional.without_density import WithoutDensity
from laplace_tf.seeds import stateless_seed

NO_DENSITY = (
    "The Nyström posterior (hessian_structure='gp' with n_eigenvalues) has covariance of rank n_eigenvalues, "
    "so it has no density over the weights and no marginal likelihood; tune the prior with "
    "optimize_prior_precision(method='gridsearch', val_data=...), or use n_eigenvalues=None (the exact GP)."
)


class NystromPosterior(WithoutDensity):
    """$\\mathcal{N}(\\theta_*, F F^\\top)$ on the span of the Nyström features.

    Args:
      mean: the MAP, ``(P,)``.
      curvature: the basis and the projected GGN.
      curvature_scale: $s$.
      prior_precision: the per-parameter prior precision, all equal (a scalar prior).
    """

    structure = "nystrom"
    reason = NO_DENSITY

    def __init__(
        self, mean: tf.Tensor, curvature: NystromCurvature, curvature_scale: tf.Tensor, prior_precision: tf.Tensor
    ):
        delta = prior_precision[0]
        if not bool(tf.reduce_all(prior_precision == delta)):
            raise ValueError(
                "hessian_structure='gp' with n_eigenvalues takes a scalar prior precision: the Nyström "
                "features are eigenfunctions of the kernel J J^T / delta for one delta."
            )
        self.mean = mean
        k = curvature.projected.shape[0]
        precision = tf.eye(k, dtype=mean.dtype) + curvature_scale * curvature.projected / delta
        values, vectors = tf.linalg.eigh(0.5 * (precision + tf.transpose(precision)))
        self.factor = tf.matmul(curvature.basis, vectors) * tf.math.rsqrt(values) * tf.math.rsqrt(delta)

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[0])

    @property
    def variance(self) -> tf.Tensor:
        return tf.reduce_sum(tf.square(self.factor), axis=1)

    @property
    def covariance(self) -> tf.Tensor:
        """The dense ``(P, P)`` covariance of rank ``K`` (for small models and tests)."""
        return tf.matmul(self.factor, self.factor, transpose_b=True)

    def functional_variance(self, jacobians: tf.Tensor) -> tf.Tensor:
        """$(J F)(J F)^\\top$ for Jacobians ``(B, K_out, P)``."""
        projected = tf.matmul(jacobians, self.factor)
        return tf.matmul(projected, projected, transpose_b=True)

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        z = tf.random.stateless_normal(
            [n_samples, self.factor.shape[1]], seed=stateless_seed(seed), dtype=self.mean.dtype
        )
        return self.mean[None, :] + tf.matmul(z, self.factor, transpose_b=True)
