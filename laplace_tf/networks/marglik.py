r"""The Laplace approximation to the log marginal likelihood (the evidence).

$$
\log p(\mathcal{D}) \approx \log p(\mathcal{D} \mid \theta_*)
- \tfrac12 \left( \log\det P - \log\det P_0 + (\theta_* - \mu_0)^\top P_0 (\theta_* - \mu_0) \right)
$$

with $P$ the posterior precision, $P_0 = \operatorname{diag}(\lambda)$ the prior
precision and $\mu_0$ the prior mean. (The $\tfrac{P}{2}\log 2\pi$ terms of prior
and posterior cancel.) Every term is a differentiable TensorFlow expression, so prior precision
and observation noise can be tuned by gradient-based optimisation of this quantity.

Example:
    ```python
    >>> float(log_marginal_likelihood(
    ...     log_likelihood=tf.constant(-10.0), log_det_posterior_precision=tf.constant(3.0),
    ...     prior_precision=tf.constant([1.0, 1.0]), theta=tf.constant([1.0, 1.0]),
    ...     prior_mean=tf.constant(0.0)))
    -12.5
    ```
"""

from __future__ import annotations

import tensorflow as tf


def log_marginal_likelihood(
    log_likelihood: tf.Tensor,
    log_det_posterior_precision: tf.Tensor,
    prior_precision: tf.Tensor,
    theta: tf.Tensor,
    prior_mean: tf.Tensor,
) -> tf.Tensor:
    """The evidence from its parts; ``prior_precision`` is the per-parameter ``(P,)`` vector."""
    delta = theta - prior_mean
    scatter = tf.reduce_sum(prior_precision * tf.square(delta))
    log_det_prior_precision = tf.reduce_sum(tf.math.log(prior_precision))
    return log_likelihood - 0.5 * (log_det_posterior_precision - log_det_prior_precision + scatter)
