"""Curvature of the summed negative log-likelihood, one structure per module.

:func:`batch_curvature` compiles, for a structure (``full``, ``diag``) and a curvature type
(``ggn``, ``ef``, ``hessian``), the function that maps a batch to its summed loss and its
curvature contribution; :class:`laplace_tf.Laplace` sums those over the data set.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import tensorflow as tf

from laplace_tf.curvature import diag, full
from laplace_tf.curvature.jacobians import loss_gradients, output_jacobians
from laplace_tf.likelihoods import Likelihood
from laplace_tf.options import CurvatureType, HessianStructure
from laplace_tf.params import ModelParameters

STRUCTURES: dict[HessianStructure, ModuleType] = {HessianStructure.FULL: full, HessianStructure.DIAG: diag}
BatchCurvature = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


def batch_curvature(
    structure: HessianStructure, curvature_type: CurvatureType, params: ModelParameters, likelihood: Likelihood
) -> BatchCurvature:
    """A compiled ``(theta, x, y) -> (summed loss, curvature of the summed loss)``."""
    module = STRUCTURES[structure]
    apply = params.apply

    def ggn(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        f, jacobians = output_jacobians(apply, theta, x)
        loss = tf.reduce_sum(likelihood.loss(f, y))
        return loss, module.from_jacobians(jacobians, likelihood.output_hessian(f))

    def empirical_fisher(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        losses, gradients = loss_gradients(apply, likelihood, theta, x, y)
        return tf.reduce_sum(losses), module.from_gradients(gradients)

    def exact_hessian(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def batch_loss(t: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(likelihood.loss(apply(t, x), y))

        return batch_loss(theta), module.from_loss(batch_loss, theta)

    chosen = {CurvatureType.GGN: ggn, CurvatureType.EF: empirical_fisher, CurvatureType.HESSIAN: exact_hessian}
    return tf.function(chosen[curvature_type], reduce_retracing=True)


def noise_power(curvature_type: CurvatureType) -> int:
    """The power of :math:`1/\\sigma` that scales a unit-noise regression curvature.

    GGN and Hessian of :math:`\\lVert y - f\\rVert^2 / (2\\sigma^2)` scale as
    :math:`\\sigma^{-2}`; the empirical Fisher, an outer product of gradients, as
    :math:`\\sigma^{-4}`.
    """
    return 4 if curvature_type == CurvatureType.EF else 2
