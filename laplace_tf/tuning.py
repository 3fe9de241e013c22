r"""Tuning the prior precision (and observation noise) by the marginal likelihood.

The hyperparameters :math:`\eta = (\log \lambda, \log \sigma)` are found by maximising the
Laplace evidence :meth:`laplace_tf.Laplace.log_marginal_likelihood` with L-BFGS
(``tfp.optimizer.lbfgs_minimize``). Optimising in log space keeps them positive, and dividing the
evidence by the number of examples keeps L-BFGS's first steps to a sensible size; L-BFGS stops
when the gradient norm falls below the tolerance, so the result is the optimum rather than the
end of a fixed number of steps.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.options import PriorStructure
from laplace_tf.prior import expand_prior_precision

if TYPE_CHECKING:
    from laplace_tf.laplace import Laplace


def tune_prior_precision(
    la: Laplace,
    structure: PriorStructure,
    optimize_sigma_noise: bool,
    *,
    max_iterations: int,
    tolerance: float,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The evidence-maximising prior precision (and noise, if asked), as tensors."""
    log_prior = tf.math.log(_initial_prior(la, structure))
    n_prior = int(log_prior.shape[0])
    start = tf.concat([log_prior, tf.math.log(la.sigma_noise)[None]], 0) if optimize_sigma_noise else log_prior

    def unpack(eta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        prior = tf.exp(eta[:n_prior])
        prior = prior[0] if structure == PriorStructure.SCALAR else prior
        return prior, (tf.exp(eta[n_prior]) if optimize_sigma_noise else None)

    @tf.function
    def negative_evidence_and_gradient(eta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(eta)
            prior, sigma = unpack(eta)
            value = -la.log_marginal_likelihood(prior_precision=prior, sigma_noise=sigma) / la.n_data
        return value, tape.gradient(value, eta)

    result = tfp.optimizer.lbfgs_minimize(
        negative_evidence_and_gradient, start, tolerance=tolerance, max_iterations=max_iterations
    )
    if not np.all(np.isfinite(result.position.numpy())):
        raise FloatingPointError(
            "Prior optimisation failed (the evidence became non-finite); try a different starting "
            "prior_precision, or check the curvature (curvature='ggn' is always positive semi-definite)."
        )
    gradient_norm = float(tf.norm(result.objective_gradient))
    # A line search that can make no more progress at the float precision floor reports `failed`;
    # what matters is whether the gradient vanished to the precision the dtype allows.
    if not bool(result.converged) and gradient_norm > max(tolerance, np.sqrt(np.finfo(start.dtype.as_numpy_dtype).eps)):
        warnings.warn(
            f"Prior optimisation stopped after {int(result.num_iterations)} iterations without converging "
            f"(gradient norm {gradient_norm:.3g}); raise max_iterations or start from another prior_precision.",
            stacklevel=3,
        )
    return unpack(result.position)


def _initial_prior(la: Laplace, structure: PriorStructure) -> tf.Tensor:
    """The current prior precision, reduced to the shape being tuned."""
    sizes = la.params.sizes
    per_parameter = expand_prior_precision(la.prior_precision, sizes, la.n_params)
    if structure == PriorStructure.DIAG:
        return per_parameter
    per_variable = tf.math.segment_mean(per_parameter, tf.constant(la.params.variable_index()))
    if structure == PriorStructure.LAYERWISE:
        return per_variable
    return tf.reduce_mean(per_variable, keepdims=True)
