r"""Diagonal ``(P,)`` curvature of the summed negative log-likelihood.

* GGN: :math:`\operatorname{diag} \sum_b J_b^\top \Lambda_b J_b
  = \sum_{b,k,l} J_{bkp} \Lambda_{bkl} J_{blp}`, never forming the ``(P, P)`` matrix.
* Empirical Fisher: :math:`\sum_b g_b \odot g_b`.
* Hessian: the exact diagonal of :math:`\nabla^2_\theta \sum_b \ell_b`
  (:func:`laplace_tf.hessian_diagonal`).

Example::

    >>> J = tf.ones([4, 2, 3]); Lam = tf.eye(2, batch_shape=[4])
    >>> from_jacobians(J, Lam).numpy()
    array([8., 8., 8.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from laplace_tf.hessian import hessian_diagonal

name = "diag"


def zeros(n_params: int, dtype: tf.DType) -> tf.Tensor:
    """An empty accumulator."""
    return tf.zeros([n_params], dtype=dtype)


def from_jacobians(jacobians: tf.Tensor, output_hessians: tf.Tensor) -> tf.Tensor:
    """The GGN diagonal from Jacobians ``(B, K, P)`` and output Hessians ``(B, K, K)``."""
    return tf.reduce_sum(jacobians * tf.matmul(output_hessians, jacobians), axis=[0, 1])


def from_gradients(gradients: tf.Tensor) -> tf.Tensor:
    """The empirical Fisher diagonal from per-example gradients ``(B, P)``."""
    return tf.reduce_sum(tf.square(gradients), axis=0)


def from_loss(batch_loss: Callable[[tf.Tensor], tf.Tensor], theta: tf.Tensor) -> tf.Tensor:
    """The exact Hessian diagonal of the summed batch loss."""
    return hessian_diagonal(batch_loss, theta)
