r"""A Gaussian posterior whose precision is a low-rank curvature plus a diagonal prior.

With the curvature's top eigenpairs $H \approx U \operatorname{diag}(\lambda) U^\top$
(orthonormal $U \in \mathbb{R}^{P \times k}$), scale $s$ and prior precisions
$D = \operatorname{diag}(d)$ (one number, one per variable, or one per parameter), the
precision is $P = D + U E U^\top$ with $E = \operatorname{diag}(s\lambda)$. Writing
$W = D^{-1/2} U E^{1/2} = Q R$ (thin QR) and $R R^\top = V \operatorname{diag}(m) V^\top$,
$B = Q V$ is orthonormal and $P = D^{1/2} (I + B \operatorname{diag}(m) B^\top) D^{1/2}$,
so everything costs $O(P k + k^3)$:

* $\log\det P = \sum_p \log d_p + \sum_j \log(1 + m_j)$;
* $P^{-1} = D^{-1/2} \big(I - B \operatorname{diag}(m / (1 + m)) B^\top\big) D^{-1/2}$;
* $P^{-1/2} = D^{-1/2} \big(I + B \operatorname{diag}((1 + m)^{-1/2} - 1) B^\top\big)$, which draws samples.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="lowrank", rank=20).fit((x, y))
    >>> la.posterior.precision_operator()      # tf.linalg.LinearOperatorLowRankUpdate
    ```
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.networks.curvature.lowrank import LowRankCurvature
from laplace_tf.seeds import stateless_seed

tfd = tfp.distributions


class LowRankPosterior:
    """$\\mathcal{N}(\\mu, (D + U E U^\\top)^{-1})$.

    Args:
      mean: the MAP, ``(P,)``.
      curvature: the low-rank curvature.
      curvature_scale: $s$.
      prior_precision: the per-parameter prior precision $d$, ``(P,)``.
    """

    structure = "lowrank"

    def __init__(
        self, mean: tf.Tensor, curvature: LowRankCurvature, curvature_scale: tf.Tensor, prior_precision: tf.Tensor
    ):
        self.mean = mean
        self.prior = prior_precision
        self.vectors = curvature.eigenvectors
        self.values = curvature_scale * curvature.eigenvalues
        whitened = tf.math.rsqrt(prior_precision)[:, None] * self.vectors * tf.sqrt(self.values)
        q, r = tf.linalg.qr(whitened)
        m, v = tf.linalg.eigh(tf.matmul(r, r, transpose_b=True))
        self.basis, self.boost = tf.matmul(q, v), tf.maximum(m, 0.0)

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[0])

    @property
    def log_det_precision(self) -> tf.Tensor:
        return tf.reduce_sum(tf.math.log(self.prior)) + tf.reduce_sum(tf.math.log1p(self.boost))

    @property
    def variance(self) -> tf.Tensor:
        shrink = self.boost / (1.0 + self.boost)
        return (1.0 - tf.reduce_sum(tf.square(self.basis) * shrink, axis=1)) / self.prior

    @property
    def covariance(self) -> tf.Tensor:
        """The dense ``(P, P)`` covariance (for small models and tests)."""
        shrink = self.boost / (1.0 + self.boost)
        inner = tf.eye(self.n_params, dtype=self.mean.dtype) - tf.matmul(
            self.basis * shrink, self.basis, transpose_b=True
        )
        root = tf.math.rsqrt(self.prior)
        return root[:, None] * inner * root[None, :]

    def precision_operator(self) -> tf.linalg.LinearOperator:
        base = tf.linalg.LinearOperatorDiag(self.prior, is_positive_definite=True)
        return tf.linalg.LinearOperatorLowRankUpdate(
            base, self.vectors, diag_update=self.values, is_positive_definite=True
        )

    def _scale_operator(self) -> tf.linalg.LinearOperator:
        identity = tf.linalg.LinearOperatorIdentity(self.n_params, dtype=self.mean.dtype)
        update = tf.math.rsqrt(1.0 + self.boost) - 1.0
        inner = tf.linalg.LinearOperatorLowRankUpdate(identity, self.basis, diag_update=update, is_self_adjoint=True)
        return tf.linalg.LinearOperatorComposition([tf.linalg.LinearOperatorDiag(tf.math.rsqrt(self.prior)), inner])

    def distribution(self) -> tfd.Distribution:
        return tfd.MultivariateNormalLinearOperator(loc=self.mean, scale=self._scale_operator())

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        z = tf.random.stateless_normal([n_samples, self.n_params], seed=stateless_seed(seed), dtype=self.mean.dtype)
        return self.mean[None, :] + tf.transpose(self._scale_operator().matmul(z, adjoint_arg=True))

    def log_prob(self, theta: tf.Tensor) -> tf.Tensor:
        delta = theta - self.mean
        projected = tf.linalg.matvec(self.vectors, delta, transpose_a=True)
        quadratic = tf.reduce_sum(self.prior * tf.square(delta), axis=-1) + tf.reduce_sum(
            self.values * tf.square(projected), axis=-1
        )
        log_two_pi = tf.cast(np.log(2 * np.pi), self.mean.dtype)
        return -0.5 * (quadratic + self.n_params * log_two_pi - self.log_det_precision)

    def functional_variance(self, jacobians: tf.Tensor) -> tf.Tensor:
        """$\\tilde J \\tilde J^\\top - (\\tilde J B) \\operatorname{diag}(m/(1+m)) (\\tilde J B)^\\top$,
        $\\tilde J = J D^{-1/2}$."""
        whitened = jacobians * tf.math.rsqrt(self.prior)
        projected = tf.matmul(whitened, self.basis)
        shrink = self.boost / (1.0 + self.boost)
        return tf.matmul(whitened, whitened, transpose_b=True) - tf.matmul(
            projected * shrink, projected, transpose_b=True
        )
