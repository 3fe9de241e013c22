r"""Log densities at parameter draws: pointwise log-likelihoods, the log prior and the log posterior.

For draws $\theta_s$ and examples $(x_n, y_n)$ with outputs $f_{sn} = f(\theta_s, x_n)$:

* pointwise log-likelihood $\log p(y_n \mid f_{sn})$: the categorical or Bernoulli log
  probability of the label, or $\sum_k \log \mathcal{N}(y_{nk}; f_{snk}, \sigma^2)$;
* log prior $\log \mathcal{N}(\theta_s; \mu_0, \operatorname{diag}(\lambda)^{-1})$;
* unnormalised log posterior $\log p_s = \frac1T \frac{N}{n} \sum_{n \in \text{data}}
  \log p(y_n \mid f_{sn}) + \log p(\theta_s)$: the data passed (the training set, or a subset of
  ``n`` of its ``N`` examples, scaled up) are streamed in batches, so memory stays at
  $S \times B \times K$ outputs.

Example:
    ```python
    >>> log_p, n_used = log_posterior_density(la, la.sample(100, seed=0), (x_train, y_train))
    ```
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks.data import as_batches
from laplace_tf.networks.inputs import n_examples
from laplace_tf.networks.prior import expand_prior_precision
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.progress import QUIET_SECONDS, Progress


def pointwise_log_likelihood(la: Any, outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """``log p(y_n | f_sn)``, ``(S, B)``, for outputs ``(S, B, K)`` and float targets ``(B, K)``.

    Targets are as the likelihood validates them: one-hot labels, 0/1 columns or real values.
    """
    targets = tf.cast(targets, outputs.dtype)
    targets = tf.broadcast_to(targets, tf.concat([tf.shape(outputs)[:-1], tf.shape(targets)[-1:]], axis=0))
    negative = la.likelihood.loss(outputs, targets)
    if la.likelihood.name != LikelihoodName.REGRESSION:
        return -negative
    sigma = tf.cast(la.sigma_noise, outputs.dtype)
    n_outputs = tf.cast(tf.shape(outputs)[-1], outputs.dtype)
    return -negative / tf.square(sigma) - n_outputs * tf.math.log(sigma * math.sqrt(2 * math.pi))


def log_prior_density(la: Any, thetas: tf.Tensor) -> tf.Tensor:
    """The Gaussian prior's log density at each draw, ``(S,)``, normalising constant included."""
    precision = expand_prior_precision(la.prior_precision, la.params.sizes, la.n_params)
    deviation = thetas - la.prior_mean
    quadratic = tf.reduce_sum(precision * tf.square(deviation), axis=-1)
    log_det = tf.reduce_sum(tf.math.log(precision))
    return 0.5 * (log_det - quadratic - la.n_params * math.log(2 * math.pi))


def log_posterior_density(
    la: Any, thetas: tf.Tensor, data: Any, batch_size: int | None = None, verbose: bool = False
) -> tuple[tf.Tensor, int]:
    """The unnormalised log posterior at each draw, ``(S,)``, and how many examples it used.

    Args:
      la: a fitted [`Laplace`][laplace_tf.Laplace].
      thetas: draws ``(S, P)``.
      data: ``(x, y)`` arrays or a ``tf.data.Dataset`` of the training data, or of a subset of it
        (its log-likelihood is then scaled by ``la.n_data / n``, an unbiased estimate).
      batch_size: examples per batch for arrays.
      verbose: a progress bar over the batches, if they take longer than a few seconds.
    """
    batches = as_batches(data, batch_size, la._validate_targets)
    total = tf.zeros([thetas.shape[0]], la.dtype)
    n_used = 0
    progress = Progress(batches.n_batches, verbose, unit="batch", label="log posterior", delay=QUIET_SECONDS)
    for x, y in batches.iterate():
        outputs = la.outputs_at_draws(thetas, x, pred_type="nn", verbose=False)
        total += tf.reduce_sum(pointwise_log_likelihood(la, outputs, y), axis=1)
        n_used += n_examples(x)
        progress.add(1)
    progress.close()
    if n_used == 0:
        raise ValueError("The data are empty; pass the training data (or a subset) to compute log_p.")
    scale = la.n_data / n_used / la.temperature
    return scale * total + log_prior_density(la, thetas), n_used


def log_posterior_gradient(la: Any, data: Any, batch_size: int | None = None) -> tf.Tensor:
    """The gradient ``(P,)`` of the (scaled, tempered) log posterior at the Laplace mean.

    Zero at a mode: the Laplace approximation assumes the trained weights are the MAP under
    the prior it uses. Data as in `log_posterior_density`.
    """
    batches = as_batches(data, batch_size, la._validate_targets)
    gradient = tf.zeros_like(la.mean)
    n_used = 0
    for x, y in batches.iterate():
        theta = tf.identity(la.mean)
        with tf.GradientTape() as tape:
            tape.watch(theta)
            outputs = la.params.apply(theta, la._cast(x))[None]
            log_likelihood = tf.reduce_sum(pointwise_log_likelihood(la, outputs, y))
        gradient += tape.gradient(log_likelihood, theta)
        n_used += n_examples(x)
    precision = expand_prior_precision(la.prior_precision, la.params.sizes, la.n_params)
    return la.n_data / n_used / la.temperature * gradient - precision * (la.mean - la.prior_mean)


def mode_distance(la: Any, gradient: tf.Tensor) -> float:
    r"""How far the mean is from the posterior's mode, in posterior standard deviations.

    One Newton step from the mean moves by $\Sigma g$; its length in the Gaussian's own
    metric is $\sqrt{g^\top \Sigma g}$, about 0 at a mode.
    """
    quadratic = la.posterior.functional_variance(tf.reshape(gradient, [1, 1, -1]))
    return float(tf.sqrt(tf.maximum(tf.reshape(quadratic, []), 0.0)))


def log_weights(log_p: Any, log_q: Any) -> np.ndarray:
    """Importance log weights ``log_p - log_q``, shifted to a maximum of 0 (float64)."""
    weights = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    if not np.all(np.isfinite(weights)):
        raise FloatingPointError("log_p - log_q is not finite for some draws; the model overflows at those draws.")
    return weights - weights.max()
