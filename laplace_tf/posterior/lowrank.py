r"""A Gaussian posterior whose precision is a low-rank curvature plus an isotropic prior.

With the curvature's top eigenpairs :math:`H \approx U \operatorname{diag}(\lambda) U^\top`
(orthonormal :math:`U \in \mathbb{R}^{P \times k}`), scale :math:`s` and scalar prior
:math:`\delta`, the precision is :math:`P = \delta I + U \operatorname{diag}(e) U^\top` with
:math:`e = s \lambda`, and everything is :math:`O(P k)`:

* :math:`\log\det P = \sum_i \log(e_i + \delta) + (P - k) \log \delta`;
* :math:`P^{-1} = \delta^{-1} \big(I - U \operatorname{diag}(e / (e + \delta)) U^\top\big)`;
* :math:`P^{-1/2} = \delta^{-1/2} \big(I + U \operatorname{diag}(\sqrt{\delta / (e + \delta)} - 1) U^\top\big)`,
  which draws samples.

Example::

    >>> la = lt.Laplace(model, "classification", hessian_structure="lowrank", rank=20).fit((x, y))
    >>> la.posterior.precision_operator()      # tf.linalg.LinearOperatorLowRankUpdate
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.curvature.lowrank import LowRankCurvature
from laplace_tf.seeds import stateless_seed

tfd = tfp.distributions


class LowRankPosterior:
    """:math:`\\mathcal{N}(\\mu, (\\delta I + U \\operatorname{diag}(e) U^\\top)^{-1})`.

    Args:
      mean: the MAP, ``(P,)``.
      curvature: the low-rank curvature.
      curvature_scale: :math:`s`.
      prior_precision: the per-parameter prior ``(P,)``; it must be one number.
    """

    structure = "lowrank"

    def __init__(
        self, mean: tf.Tensor, curvature: LowRankCurvature, curvature_scale: tf.Tensor, prior_precision: tf.Tensor
    ):
        if tf.executing_eagerly() and not np.allclose(prior_precision.numpy(), prior_precision.numpy()[0]):
            raise ValueError("hessian_structure='lowrank' needs a scalar prior precision.")
        self.mean = mean
        self.vectors = curvature.eigenvectors
        self.values = curvature_scale * curvature.eigenvalues
        self.prior = prior_precision[0]

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[0])

    @property
    def log_det_precision(self) -> tf.Tensor:
        rank = int(self.values.shape[0])
        return tf.reduce_sum(tf.math.log(self.values + self.prior)) + (self.n_params - rank) * tf.math.log(self.prior)

    @property
    def variance(self) -> tf.Tensor:
        shrink = self.values / (self.values + self.prior)
        return (1.0 - tf.reduce_sum(tf.square(self.vectors) * shrink, axis=1)) / self.prior

    @property
    def covariance(self) -> tf.Tensor:
        """The dense ``(P, P)`` covariance (for small models and tests)."""
        shrink = self.values / (self.values + self.prior)
        identity = tf.eye(self.n_params, dtype=self.mean.dtype)
        return (identity - tf.matmul(self.vectors * shrink, self.vectors, transpose_b=True)) / self.prior

    def precision_operator(self) -> tf.linalg.LinearOperator:
        base = tf.linalg.LinearOperatorScaledIdentity(self.n_params, self.prior, is_positive_definite=True)
        return tf.linalg.LinearOperatorLowRankUpdate(
            base, self.vectors, diag_update=self.values, is_positive_definite=True
        )

    def _scale_operator(self) -> tf.linalg.LinearOperator:
        root = tf.math.rsqrt(self.prior)
        base = tf.linalg.LinearOperatorScaledIdentity(self.n_params, root, is_positive_definite=True)
        update = root * (tf.sqrt(self.prior / (self.values + self.prior)) - 1.0)
        return tf.linalg.LinearOperatorLowRankUpdate(base, self.vectors, diag_update=update, is_self_adjoint=True)

    def distribution(self) -> tfd.Distribution:
        return tfd.MultivariateNormalLinearOperator(loc=self.mean, scale=self._scale_operator())

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        z = tf.random.stateless_normal([n_samples, self.n_params], seed=stateless_seed(seed), dtype=self.mean.dtype)
        return self.mean[None, :] + tf.transpose(self._scale_operator().matmul(z, adjoint_arg=True))

    def log_prob(self, theta: tf.Tensor) -> tf.Tensor:
        delta = theta - self.mean
        quadratic = self.prior * tf.reduce_sum(tf.square(delta), axis=-1) + tf.reduce_sum(
            self.values * tf.square(tf.linalg.matvec(self.vectors, delta, transpose_a=True)), axis=-1
        )
        log_two_pi = tf.cast(np.log(2 * np.pi), self.mean.dtype)
        return -0.5 * (quadratic + self.n_params * log_two_pi - self.log_det_precision)

    def functional_variance(self, jacobians: tf.Tensor) -> tf.Tensor:
        """:math:`\\delta^{-1}(J J^\\top - (J U) \\operatorname{diag}(e/(e+\\delta)) (J U)^\\top)`."""
        projected = tf.matmul(jacobians, self.vectors)
        shrink = self.values / (self.values + self.prior)
        full = tf.matmul(jacobians, jacobians, transpose_b=True)
        return (full - tf.matmul(projected * shrink, projected, transpose_b=True)) / self.prior
