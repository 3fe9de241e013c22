r"""Link approximations: from a Gaussian over outputs $\mathcal{N}(m, V)$ to predictions.

* ``probit`` (MacKay): for classification,
  $p \approx \mathrm{softmax}\big(m_k / \sqrt{1 + \tfrac{\pi}{8} V_{kk}}\big)$; for binary,
  $p \approx \sigma\big(m / \sqrt{1 + \tfrac{\pi}{8} V}\big)$.
* ``mc``: the average of the link over draws $f^{(s)} = m + V^{1/2} z^{(s)}$.
* ``bridge`` (the Laplace bridge of Hobbhahn et al., 2022): the Gaussian, first conditioned on
  $\sum_k f_k = 0$ (softmax is shift-invariant), is mapped to a Dirichlet with
  $\alpha_k = \big(1 - 2/K + e^{m_k} \sum_l e^{-m_l} / K^2\big) / V_{kk}$, whose mean
  $\alpha / \sum \alpha$ is returned. ``bridge_norm`` first rescales the means and
  variances so the average variance is $2/K$, as laplace-torch does.

`gaussian_output_samples` draws $f^{(s)}$ with the symmetric square root of
$V$ (eigendecomposition), which is defined even when $V$ is only semi-definite.

Example:
    ```python
    >>> probit(tf.zeros([1, 2]), tf.ones([1, 2, 2]) * 0.0, "classification").numpy()
    array([[0.5, 0.5]], dtype=float32)
    ```
"""

from __future__ import annotations

import math

import tensorflow as tf

from laplace_tf.options import Likelihood
from laplace_tf.seeds import stateless_seed


def link(f: tf.Tensor, likelihood: Likelihood) -> tf.Tensor:
    """Outputs to predictions: softmax, sigmoid, or the identity for regression."""
    if likelihood == Likelihood.CLASSIFICATION:
        return tf.nn.softmax(f)
    if likelihood in (Likelihood.BINARY, Likelihood.MULTILABEL):
        return tf.sigmoid(f)
    return f


def probit(f_mean: tf.Tensor, f_var: tf.Tensor, likelihood: Likelihood) -> tf.Tensor:
    """The probit approximation from means ``(B, K)`` and covariances ``(B, K, K)``."""
    kappa = tf.math.rsqrt(1.0 + math.pi / 8.0 * tf.linalg.diag_part(f_var))
    return link(kappa * f_mean, likelihood)


def bridge(f_mean: tf.Tensor, f_var: tf.Tensor, normalize: bool = False) -> tf.Tensor:
    """The (normalised) Laplace bridge from means ``(B, K)`` and covariances ``(B, K, K)``."""
    row_sums = tf.reduce_sum(f_var, axis=-1)  # V 1
    total = tf.reduce_sum(row_sums, axis=-1, keepdims=True)  # 1^T V 1
    mean = f_mean - row_sums * tf.reduce_sum(f_mean, axis=-1, keepdims=True) / total
    covariance = f_var - row_sums[:, :, None] * row_sums[:, None, :] / total[:, :, None]
    variance = tf.linalg.diag_part(covariance)
    k = tf.cast(tf.shape(f_mean)[-1], f_mean.dtype)
    if normalize:
        average = tf.reduce_mean(variance, axis=-1, keepdims=True) / tf.sqrt(k / 2.0)
        mean, variance = mean / tf.sqrt(average), variance / average
    alpha = (1.0 - 2.0 / k + tf.exp(mean) / k**2 * tf.reduce_sum(tf.exp(-mean), axis=-1, keepdims=True)) / variance
    return alpha / tf.reduce_sum(alpha, axis=-1, keepdims=True)


def gaussian_output_samples(f_mean: tf.Tensor, f_var: tf.Tensor, n_samples: int, seed: int | None) -> tf.Tensor:
    """Draws ``(n_samples, B, K)`` from $\\mathcal{N}(m_b, V_b)$ for each example."""
    eigenvalues, eigenvectors = tf.linalg.eigh(f_var)
    root = eigenvectors * tf.sqrt(tf.maximum(eigenvalues, 0.0))[:, None, :]
    shape = [n_samples, *f_mean.shape.as_list()]
    z = tf.random.stateless_normal(shape, seed=stateless_seed(seed), dtype=f_mean.dtype)
    return f_mean[None] + tf.einsum("bkl,sbl->sbk", root, z)


def monte_carlo(
    f_mean: tf.Tensor, f_var: tf.Tensor, likelihood: Likelihood, n_samples: int, seed: int | None
) -> tf.Tensor:
    """The Monte-Carlo link approximation: the mean of the link over ``n_samples`` draws."""
    return tf.reduce_mean(link(gaussian_output_samples(f_mean, f_var, n_samples, seed), likelihood), axis=0)
