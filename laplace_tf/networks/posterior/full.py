r"""A Gaussian posterior with a dense precision matrix.

The precision is $P = s\,H + \operatorname{diag}(\lambda)$, the curvature $H$
scaled by $s = 1 / (\sigma^2 T)$ (regression) or $1/T$, plus the prior precision
$\lambda$. Everything works from its Cholesky factor $P = L L^\top$:

* $\log\det P = 2 \sum_i \log L_{ii}$;
* a draw is $\theta = \mu + L^{-\top} z$, $z \sim \mathcal{N}(0, I)$;
* the functional variance of a Jacobian $J_b$ is $J_b P^{-1} J_b^\top = W_b W_b^\top$
  with $W_b^\top = L^{-1} J_b^\top$.

Example:
    ```python
    >>> post = FullPosterior(tf.zeros([2]), tf.constant([[2.0, 1.0], [1.0, 2.0]]))
    >>> float(post.log_det_precision)    # log 3
    1.0986123
    ```
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.networks.posterior import host_lapack
from laplace_tf.seeds import stateless_seed

tfd = tfp.distributions


class NotPositiveDefiniteError(ValueError):
    """The posterior precision has a non-positive eigenvalue, so it defines no Gaussian."""


class FullPosterior:
    """$\\mathcal{N}(\\mu, P^{-1})$ with a dense ``(P, P)`` precision.

    Args:
      mean: the MAP $\\mu$, ``(P,)``.
      precision: the posterior precision, ``(P, P)``, symmetric positive definite.
      constant: ``True`` when nothing differentiates through this posterior (a fitted
        [`Laplace`][laplace_tf.Laplace]'s): its Cholesky and covariance factors are then computed
        by LAPACK on the host where they can be (see `host_lapack`), faster on a CPU than
        TensorFlow's kernels, and carry no gradients.
    """

    structure = "full"

    def __init__(self, mean: tf.Tensor, precision: tf.Tensor, *, constant: bool = False):
        self.mean = mean
        self.constant = constant
        self._precision, self._terms = precision, None
        self.cholesky = self._factor()

    @classmethod
    def from_curvature(
        cls,
        mean: tf.Tensor,
        curvature: tf.Tensor,
        scale: tf.Tensor,
        prior_precision: tf.Tensor,
        *,
        constant: bool = False,
    ) -> FullPosterior:
        """The posterior with precision $s H + \\operatorname{diag}(\\lambda)$ (``scale`` $s$,
        ``prior_precision`` $\\lambda$ ``(P,)``), formed when first asked for: a ``constant`` one
        on the host forms the sum in the buffer LAPACK factors instead (`host_lapack.cholesky`)."""
        posterior = cls.__new__(cls)
        posterior.mean, posterior.constant = mean, constant
        posterior._precision, posterior._terms = None, (curvature, scale, prior_precision)
        posterior.cholesky = posterior._factor()
        return posterior

    @property
    def precision(self) -> tf.Tensor:
        """The precision $P$, ``(P, P)``."""
        if self._precision is None:
            curvature, scale, prior_precision = self._terms
            self._precision = scale * curvature + tf.linalg.diag(prior_precision)
        return self._precision

    @classmethod
    def from_eigendecomposition(
        cls, mean: tf.Tensor, values: tf.Tensor, vectors: tf.Tensor, prior_precision: tf.Tensor
    ) -> FullPosterior:
        """The posterior with precision $V \\operatorname{diag}(v) V^\\top + \\operatorname{diag}(d)$.

        The Cholesky factor comes from a QR factorisation of $F = [\\operatorname{diag}(\\sqrt v)
        V^\\top; \\operatorname{diag}(\\sqrt d)]$ ($F^\\top F$ is the precision), which stays
        positive definite for non-negative ``values`` and positive ``prior_precision`` however
        ill-conditioned the sum, where a Cholesky factorisation of the formed matrix can fail.
        """
        stacked = tf.concat(
            [tf.sqrt(values)[:, None] * tf.transpose(vectors), tf.linalg.diag(tf.sqrt(prior_precision))], 0
        )
        upper = tf.linalg.qr(stacked)[1]
        signs = tf.where(tf.linalg.diag_part(upper) < 0, -1.0, 1.0)
        posterior = cls.__new__(cls)
        posterior.mean = mean
        posterior.constant = False
        posterior._terms = None
        posterior._precision = tf.matmul(vectors * values, vectors, transpose_b=True) + tf.linalg.diag(prior_precision)
        posterior.cholesky = tf.transpose(upper * tf.cast(signs, upper.dtype)[:, None])
        return posterior

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[0])

    @property
    def log_det_precision(self) -> tf.Tensor:
        """$\\log \\det P$."""
        return 2.0 * tf.reduce_sum(tf.math.log(tf.linalg.diag_part(self.cholesky)))

    @property
    def covariance(self) -> tf.Tensor:
        """$P^{-1}$, ``(P, P)``: $S S^\\top$ where `covariance_factor` is kept or cheap, else two
        triangular solves."""
        if self._covariance_factor_at_hand:
            return tf.matmul(self.covariance_factor, self.covariance_factor, transpose_b=True)
        identity = tf.eye(self.n_params, dtype=self.mean.dtype)
        return tf.linalg.cholesky_solve(self.cholesky, identity)

    @property
    def covariance_factor(self) -> tf.Tensor:
        """$S = L^{-\\top}$, ``(P, P)``, with $S S^\\top = P^{-1}$: a triangular inverse, kept once
        computed eagerly (`has_covariance_factor`), for predictives that take many Jacobians'
        products."""
        kept = getattr(self, "_covariance_factor", None)
        if kept is not None:
            return kept
        if self.constant and host_lapack.on_host(self.cholesky):
            factor = host_lapack.inverse_transpose(self.cholesky)
        else:
            identity = tf.eye(self.n_params, dtype=self.mean.dtype)
            factor = tf.linalg.triangular_solve(self.cholesky, identity, lower=True, adjoint=True)
        if tf.executing_eagerly():  # a graph tensor must not outlive its trace
            self._covariance_factor = factor
        return factor

    @property
    def has_covariance_factor(self) -> bool:
        """Whether `covariance_factor` is already computed and kept."""
        return getattr(self, "_covariance_factor", None) is not None

    @property
    def _covariance_factor_at_hand(self) -> bool:
        """Whether `covariance_factor` is kept, or LAPACK would form it in $P^3/3$."""
        return self.has_covariance_factor or (self.constant and host_lapack.on_host(self.cholesky))

    @property
    def variance(self) -> tf.Tensor:
        """The marginal variances $\\operatorname{diag}(P^{-1})$, ``(P,)``: the rows' squared norms
        of `covariance_factor`."""
        if self._covariance_factor_at_hand:
            return tf.reduce_sum(tf.square(self.covariance_factor), axis=1)
        inverse_factor = tf.linalg.triangular_solve(self.cholesky, tf.eye(self.n_params, dtype=self.mean.dtype))
        return tf.reduce_sum(tf.square(inverse_factor), axis=0)

    def distribution(self) -> tfd.Distribution:
        """The posterior as a TFP distribution over $\\theta$."""
        factor = tf.linalg.LinearOperatorLowerTriangular(self.cholesky)
        return tfp.experimental.distributions.MultivariateNormalPrecisionFactorLinearOperator(
            loc=self.mean, precision_factor=factor
        )

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        """``n_samples`` draws $\\mu + L^{-\\top} z$, ``(n_samples, P)``."""
        z = tf.random.stateless_normal([self.n_params, n_samples], seed=stateless_seed(seed), dtype=self.mean.dtype)
        draws = tf.linalg.triangular_solve(self.cholesky, z, lower=True, adjoint=True)
        return self.mean[None, :] + tf.transpose(draws)

    def log_prob(self, theta: tf.Tensor) -> tf.Tensor:
        """The log density at ``theta`` of shape ``(..., P)``."""
        return self.distribution().log_prob(theta)

    def uses_covariance_factor(self, rows: int) -> bool:
        """Whether products with ``rows`` Jacobian rows (of all a call's batches) should take
        `covariance_factor`: kept from an earlier call, or costing ($P^3$ at most) no more than
        their triangular solves ($P^2$ a row), which it then spares every later call. Eagerly only:
        a traced call must not keep a graph tensor."""
        return tf.executing_eagerly() and (self.has_covariance_factor or int(rows) >= self.n_params)

    def functional_variance(self, jacobians: tf.Tensor, rows: int | None = None) -> tf.Tensor:
        """$J_b P^{-1} J_b^\\top = W_b W_b^\\top$ for Jacobians ``(B, K, P)``, giving ``(B, K, K)``,
        with $W_b^\\top = L^{-1} J_b^\\top$: a constant posterior's on the host by BLAS
        (`host_lapack.solve_rows`: no $S$ to form; as fast as $J_b S$ in float32, twice as fast in
        float64), else $W_b = J_b S$ by `covariance_factor` where it pays (`uses_covariance_factor`,
        ``rows``: all the call's Jacobian rows, default this batch's $B K$), else by TensorFlow's
        triangular solve."""
        batch, k = tf.shape(jacobians)[0], tf.shape(jacobians)[1]
        stacked = tf.reshape(jacobians, [-1, self.n_params])
        if self.constant and host_lapack.on_host(self.cholesky) and host_lapack.on_host(stacked):
            whitened_rows = self._whitened_on_host(stacked)
        elif self.uses_covariance_factor(rows or stacked.shape[0] or 0):
            whitened_rows = tf.matmul(stacked, self.covariance_factor)
        else:
            whitened_rows = tf.transpose(tf.linalg.triangular_solve(self.cholesky, tf.transpose(stacked), lower=True))
        per_example = tf.reshape(whitened_rows, [batch, k, self.n_params])
        return tf.matmul(per_example, per_example, transpose_b=True)

    def _whitened_on_host(self, rows: tf.Tensor) -> tf.Tensor:
        """$R L^{-\\top}$ by `host_lapack.solve_rows`, still differentiable in ``rows`` (predictives
        differentiated in their inputs): the gradient of $W = R L^{-\\top}$ is
        $\\bar R = \\bar W L^{-1} = (L^{-\\top} \\bar W^\\top)^\\top$, one triangular solve."""

        @tf.custom_gradient
        def whiten(rows: tf.Tensor) -> tuple[tf.Tensor, Callable]:
            def gradient(upstream: tf.Tensor) -> tf.Tensor:
                solved = tf.linalg.triangular_solve(self.cholesky, tf.transpose(upstream), lower=True, adjoint=True)
                return tf.transpose(solved)

            return host_lapack.solve_rows(self.cholesky, rows), gradient

        return whiten(rows)

    def _factor(self) -> tf.Tensor:
        """The Cholesky factor (by LAPACK for a constant posterior on the host), or a clear error
        when the precision is not positive definite."""
        terms = self._terms or (self._precision,)
        if self.constant and host_lapack.on_host(terms[0]):
            factor = host_lapack.cholesky(*terms)
        else:
            try:
                factor = tf.linalg.cholesky(self.precision)
            except tf.errors.InvalidArgumentError:
                factor = None
        if tf.executing_eagerly() and (factor is None or not np.all(np.isfinite(tf.linalg.diag_part(factor)))):
            raise NotPositiveDefiniteError(_factorisation_failure_message(self.precision))
        return factor


def log_det_with_scalar_prior(
    curvature_eigenvalues: tf.Tensor, curvature_scale: tf.Tensor, prior_precision: tf.Tensor
) -> tf.Tensor:
    r"""$\log\det(s H + \lambda I) = \sum_i \log(s e_i + \lambda)$ from the eigenvalues of H.

    One eigendecomposition of the curvature serves every scalar prior and scale in O(P), and
    stays finite for any $\lambda > 0$ where a Cholesky factorisation of a nearly
    singular matrix would fail in float32. Eagerly, a non-positive eigenvalue of the precision (an
    indefinite Hessian away from a minimum) raises [`NotPositiveDefiniteError`][laplace_tf.NotPositiveDefiniteError].
    """
    eigenvalues = curvature_scale * curvature_eigenvalues + prior_precision
    if tf.executing_eagerly() and float(tf.reduce_min(eigenvalues)) <= 0:
        raise NotPositiveDefiniteError(not_positive_definite_message(float(tf.reduce_min(eigenvalues))))
    return tf.reduce_sum(tf.math.log(eigenvalues))


def _factorisation_failure_message(precision: tf.Tensor) -> str:
    """Why an eager ``precision`` has no Cholesky factor: entries that are not finite, or an
    eigenvalue that is not positive."""
    if not np.all(np.isfinite(precision)):
        return (
            "The posterior precision contains NaN or inf: the curvature overflowed. "
            "Fit in float64, or scale the inputs so that the model's logits stay moderate."
        )
    return not_positive_definite_message(float(tf.reduce_min(host_lapack.eigvalsh(precision))))


def not_positive_definite_message(smallest: float) -> str:
    """What went wrong and what to do when the posterior precision has eigenvalue ``smallest <= 0``."""
    return (
        f"The posterior precision is not positive definite (smallest eigenvalue {smallest:.3g}). "
        "This happens with curvature='hessian' away from a true minimum of the loss. "
        "Use curvature='ggn' (always positive semi-definite), train the model to convergence, "
        f"or use a prior precision larger than {max(-smallest, 0.0):.3g}."
    )
