r"""Dense ``(P, P)`` curvature of the summed negative log-likelihood.

* GGN: $\sum_b J_b^\top \Lambda_b J_b$, one matrix product over the stacked
  $(BK, P)$ Jacobians.
* Empirical Fisher: $\sum_b g_b g_b^\top = G^\top G$.
* Hessian: $\nabla^2_\theta \sum_b \ell_b$ by nested tapes ([`hessian`][laplace_tf.hessian]).

Example:
    ```python
    >>> J = tf.ones([4, 2, 3])                  # Lambda = I: the weighted Jacobians are J
    >>> from_jacobians(J, J).numpy()[0, 0]      # 4 examples x 2 outputs x 1 x 1
    8.0
    ```
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from laplace_tf.hessians import hessian


def from_jacobians(jacobians: tf.Tensor, weighted_jacobians: tf.Tensor) -> tf.Tensor:
    """The GGN $\\sum_b J_b^\\top (\\Lambda_b J_b)$ from two ``(B, K, P)`` tensors."""
    n_params = tf.shape(jacobians)[-1]
    stacked, weighted = tf.reshape(jacobians, [-1, n_params]), tf.reshape(weighted_jacobians, [-1, n_params])
    return tf.matmul(stacked, weighted, transpose_a=True)


def from_gradients(gradients: tf.Tensor) -> tf.Tensor:
    """The empirical Fisher $G^\\top G$ from per-example gradients ``(B, P)``."""
    return tf.matmul(gradients, gradients, transpose_a=True)


def from_loss(batch_loss: Callable[[tf.Tensor], tf.Tensor], theta: tf.Tensor, vectorize: bool = True) -> tf.Tensor:
    """The exact Hessian of the summed batch loss."""
    return hessian(batch_loss, theta, vectorize=vectorize)
