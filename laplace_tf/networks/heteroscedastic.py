r"""Heteroscedastic Gaussian regression in natural parameters (Immer et al. 2023).

For ``K`` targets the network outputs ``2 K`` numbers per example, $f = (a, b)$: the natural
parameters of $\mathcal{N}(\mu, \sigma^2)$ are $\eta_1 = a$ and $\eta_2 = -\tfrac12 e^{b}$, so

$$\sigma^2 = e^{-b}, \qquad \mu = a\, e^{-b}, \qquad
\ell(a, b; y) = \tfrac12 \log 2\pi - \tfrac12 b - a y + \tfrac12 e^{b} y^2 + \tfrac12 a^2 e^{-b}.$$

The Hessian of $\ell$ in $(a, b)$ depends on $y$ and is indefinite where $|y| < |\mu|$; its
expectation under the model, the Fisher, is positive definite and is the GGN's middle factor:

$$\Lambda = \begin{pmatrix} e^{-b} & -a e^{-b} \\ -a e^{-b} & \tfrac12 + a^2 e^{-b}
\end{pmatrix} = V V^\top, \quad V = \begin{pmatrix} e^{-b/2} & 0 \\ -a e^{-b/2} &
\sqrt{1/2} \end{pmatrix},$$

one such block per target. With the natural parameterisation the GGN is the Fisher of the
exponential family, which is what makes it the right curvature (the paper's argument).

The predictive separates the two uncertainties: the *epistemic* variance of the mean
$\mu(x, \theta)$ under the posterior (GLM: the linearised $\mu$, $J_\mu \Sigma J_\mu^\top$), and
the *aleatoric* noise $\mathbb{E}[\sigma^2(x, \theta)]$ (GLM: $e^{-m_b + v_b / 2}$, the mean of
a log-normal, with $m_b, v_b$ the linearised $b$'s mean and variance).

Example:
    ```python
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, activation="tanh"),
    ...                           keras.layers.Dense(2)])          # (a, b) for one target
    >>> la = lt.Laplace(model, "heteroscedastic", subset_of_weights="all", hessian_structure="full").fit((x, y))
    >>> mean, epistemic, aleatoric = la.predict(x_test)
    ```
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from laplace_tf.networks.likelihoods import Likelihood, as_columns, numbers
from laplace_tf.options import Likelihood as LikelihoodName


class Heteroscedastic(Likelihood):
    """Gaussian observations whose mean and noise the network predicts, in natural parameters."""

    name = LikelihoodName.HETEROSCEDASTIC

    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        if n_outputs % 2:
            raise ValueError(
                f"likelihood='heteroscedastic' needs two outputs per target (a, b: mean = a * exp(-b), "
                f"variance = exp(-b)); the model has {n_outputs}. Give its last layer 2 * K units."
            )
        targets = n_outputs // 2
        columns = as_columns(y, targets)
        if columns is None:
            raise ValueError(
                f"y (heteroscedastic targets) has shape {np.shape(y)}; the model's {n_outputs} outputs "
                f"describe {targets} target(s), so pass y of shape (N, {targets})."
            )
        return numbers(columns, "y (heteroscedastic targets)")

    def loss(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        a, b = split_outputs(f)
        per_target = 0.5 * math.log(2 * math.pi) - 0.5 * b - a * y + 0.5 * tf.exp(b) * y**2 + 0.5 * a**2 * tf.exp(-b)
        return tf.reduce_sum(per_target, axis=-1)

    def output_hessian(self, f: tf.Tensor) -> tf.Tensor:
        root = self.hessian_sqrt(f)
        return tf.matmul(root, root, transpose_b=True)

    def hessian_sqrt(self, f: tf.Tensor) -> tf.Tensor:
        """Block-diagonal $V$ ``(B, 2K, 2K)`` in the outputs' ``(a_1..a_K, b_1..b_K)`` order."""
        a, b = split_outputs(f)
        scale = tf.exp(-0.5 * b)
        top = tf.concat([tf.linalg.diag(scale), tf.zeros_like(tf.linalg.diag(a))], axis=2)
        bottom = tf.concat(
            [tf.linalg.diag(-a * scale), tf.linalg.diag(tf.fill(tf.shape(a), tf.constant(math.sqrt(0.5), f.dtype)))],
            axis=2,
        )
        return tf.concat([top, bottom], axis=1)

    def loss_gradient(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        a, b = split_outputs(f)
        gradient_a = a * tf.exp(-b) - y
        gradient_b = -0.5 + 0.5 * tf.exp(b) * y**2 - 0.5 * a**2 * tf.exp(-b)
        return tf.concat([gradient_a, gradient_b], axis=-1)

    def sampled_loss_gradient(self, f: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        mean, variance = mean_and_variance(f)
        draws = mean + tf.sqrt(variance) * tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=f.dtype)
        return self.loss_gradient(f, draws)


def split_outputs(f: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """$(a, b)$, each ``(..., K)``, from outputs ``(..., 2K)``."""
    return tf.split(f, 2, axis=-1)


def mean_and_variance(f: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """$\\mu = a e^{-b}$ and $\\sigma^2 = e^{-b}$ from outputs ``(..., 2K)``."""
    a, b = split_outputs(f)
    variance = tf.exp(-b)
    return a * variance, variance


def glm_moments(f_mean: tf.Tensor, f_covariance: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mean, epistemic and aleatoric variance ``(N, K)`` from the linearised outputs' mean ``(N, 2K)``
    and covariance ``(N, 2K, 2K)``: the delta method for $\\mu$ (exact for the linearised
    $\\mu(\\theta)$), the log-normal mean for $\\sigma^2$."""
    a, b = split_outputs(f_mean)
    k = a.shape[-1]
    mean = a * tf.exp(-b)
    gradient = tf.concat([tf.linalg.diag(tf.exp(-b)), tf.linalg.diag(-mean)], axis=2)  # dmu / d(a, b): (N, K, 2K)
    epistemic = tf.linalg.diag_part(tf.matmul(tf.matmul(gradient, f_covariance), gradient, transpose_b=True))
    b_variance = tf.linalg.diag_part(f_covariance)[:, k:]
    return mean, epistemic, tf.exp(-b + 0.5 * b_variance)


def sample_moments(outputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Mean, epistemic and aleatoric variance ``(N, K)`` from network outputs at draws ``(S, N, 2K)``."""
    means, variances = mean_and_variance(outputs)
    mean = tf.reduce_mean(means, axis=0)
    return mean, tf.reduce_mean(tf.square(means - mean), axis=0), tf.reduce_mean(variances, axis=0)
