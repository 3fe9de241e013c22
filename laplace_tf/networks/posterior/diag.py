r"""A Gaussian posterior with a diagonal precision.

The precision is $p = s\,h + \lambda$ elementwise (curvature diagonal $h$, scale
$s$, prior $\lambda$), so $\log\det P = \sum_i \log p_i$, a draw is
$\mu + z / \sqrt{p}$, and the functional variance is $J_b \operatorname{diag}(1/p)
J_b^\top$.

Example:
    ```python
    >>> post = DiagPosterior(tf.zeros([2]), tf.constant([2.0, 4.0]))
    >>> post.variance.numpy()
    array([0.5 , 0.25], dtype=float32)
    ```
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.networks.posterior.full import NotPositiveDefiniteError
from laplace_tf.seeds import stateless_seed

tfd = tfp.distributions


class DiagPosterior:
    """$\\mathcal{N}(\\mu, \\operatorname{diag}(p)^{-1})$.

    Args:
      mean: the MAP $\\mu$, ``(P,)``.
      precision: the diagonal of the posterior precision, ``(P,)``, positive.
    """

    structure = "diag"

    def __init__(self, mean: tf.Tensor, precision: tf.Tensor):
        if tf.executing_eagerly() and not np.all(precision.numpy() > 0):
            smallest = float(tf.reduce_min(precision))
            raise NotPositiveDefiniteError(
                f"The diagonal posterior precision has non-positive entries (smallest {smallest:.3g}). "
                "This happens with curvature='hessian' away from a true minimum of the loss. "
                "Use curvature='ggn', train the model to convergence, or use a prior precision "
                f"larger than {max(-smallest, 0.0):.3g}."
            )
        self.mean = mean
        self.precision = precision

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[0])

    @property
    def log_det_precision(self) -> tf.Tensor:
        """$\\sum_i \\log p_i$."""
        return tf.reduce_sum(tf.math.log(self.precision))

    @property
    def variance(self) -> tf.Tensor:
        """The marginal variances $1/p$, ``(P,)``."""
        return 1.0 / self.precision

    @property
    def covariance(self) -> tf.Tensor:
        """The dense covariance $\\operatorname{diag}(1/p)$, ``(P, P)``."""
        return tf.linalg.diag(self.variance)

    def distribution(self) -> tfd.Distribution:
        """The posterior as a TFP distribution over $\\theta$."""
        return tfd.MultivariateNormalDiag(loc=self.mean, scale_diag=tf.math.rsqrt(self.precision))

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        """``n_samples`` draws, ``(n_samples, P)``."""
        z = tf.random.stateless_normal([n_samples, self.n_params], seed=stateless_seed(seed), dtype=self.mean.dtype)
        return self.mean[None, :] + z * tf.math.rsqrt(self.precision)[None, :]

    def log_prob(self, theta: tf.Tensor) -> tf.Tensor:
        """The log density at ``theta`` of shape ``(..., P)``."""
        return self.distribution().log_prob(theta)

    def functional_variance(self, jacobians: tf.Tensor) -> tf.Tensor:
        """$J_b \\operatorname{diag}(1/p) J_b^\\top$ for ``(B, K, P)``, giving ``(B, K, K)``."""
        return tf.matmul(jacobians * self.variance, jacobians, transpose_b=True)
