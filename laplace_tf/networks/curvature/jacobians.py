r"""Per-example Jacobians and gradients, vectorised over the batch with ``pfor``.

For a batch $x_1, \dots, x_B$ these return, in one vectorised pass,

* `output_jacobians`: $f_b = f(\theta, x_b)$ and
  $J_b = \partial f_b / \partial \theta \in \mathbb{R}^{K \times P}$,
* `loss_gradients`: $\ell_b$ and $g_b = \nabla_\theta \ell(f(\theta, x_b), y_b)$.

Each example is differentiated on its own (``tf.vectorized_map`` over examples), which costs
``B * K`` single-example backward passes rather than the ``B * K`` full-batch passes a Jacobian
of the batched output would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from laplace_tf.networks.inputs import add_batch_axis
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.vectorizing import map_examples

ApplyFn = Callable[[tf.Tensor, Any], tf.Tensor]


def output_jacobians(apply: ApplyFn, theta: tf.Tensor, x: Any, vectorize: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """Outputs ``(B, K)`` and their Jacobians ``(B, K, P)`` in ``theta``.

    ``vectorize=False`` loops over examples and outputs instead of using ``pfor``
    (`vectorizing`).
    """

    def one_example(x_b: Any) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(theta)
            f_b = apply(theta, add_batch_axis(x_b))[0]
        zero = tf.UnconnectedGradients.ZERO  # weights the outputs do not use (a layer left out of call)
        return f_b, tape.jacobian(f_b, theta, unconnected_gradients=zero, experimental_use_pfor=vectorize)

    return map_examples(one_example, x, vectorize)


def loss_gradients(
    apply: ApplyFn, likelihood: Likelihood, theta: tf.Tensor, x: Any, y: tf.Tensor, vectorize: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example losses ``(B,)`` and their gradients ``(B, P)`` in ``theta``."""

    def one_example(example: tuple[Any, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        x_b, y_b = example
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss_b = likelihood.loss(apply(theta, add_batch_axis(x_b)), y_b[None])[0]
        return loss_b, tape.gradient(loss_b, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return map_examples(one_example, (x, y), vectorize)
