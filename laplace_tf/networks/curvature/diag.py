r"""Diagonal ``(P,)`` curvature of the summed negative log-likelihood.

* GGN: $\operatorname{diag} \sum_b J_b^\top \Lambda_b J_b
  = \sum_{b,k,l} J_{bkp} \Lambda_{bkl} J_{blp}$, never forming the ``(P, P)`` matrix.
* Empirical Fisher: $\sum_b g_b \odot g_b$.
* Hessian: the exact diagonal of $\nabla^2_\theta \sum_b \ell_b$
  ([`hessian_diagonal`][laplace_tf.hessian_diagonal]).

Example:
    ```python
    >>> J = tf.ones([4, 2, 3])                  # Lambda = I: the weighted Jacobians are J
    >>> from_jacobians(J, J).numpy()
    array([8., 8., 8.], dtype=float32)
    ```
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from laplace_tf.hessians import hessian_diagonal


def from_jacobians(jacobians: tf.Tensor, weighted_jacobians: tf.Tensor) -> tf.Tensor:
    """The GGN diagonal from Jacobians $J_b$ and $\\Lambda_b J_b$, both ``(B, K, P)``."""
    return tf.reduce_sum(jacobians * weighted_jacobians, axis=[0, 1])


def from_gradients(gradients: tf.Tensor) -> tf.Tensor:
    """The empirical Fisher diagonal from per-example gradients ``(B, P)``."""
    return tf.reduce_sum(tf.square(gradients), axis=0)


def from_loss(batch_loss: Callable[[tf.Tensor], tf.Tensor], theta: tf.Tensor, vectorize: bool = True) -> tf.Tensor:
    """The exact Hessian diagonal of the summed batch loss."""
    return hessian_diagonal(batch_loss, theta, vectorize=vectorize)
