"""The mode of a log density by quasi-Newton optimisation (tfp.optimizer), from one or several starts.

Minimises :math:`-\\log p(z)` over flat :math:`z \\in \\mathbb{R}^D` with L-BFGS (default) or BFGS,
the objective compiled with ``tf.function``, from each starting point. The result is the start
that reached the lowest objective, with its convergence flag, iteration count and gradient norm.

Example::

    >>> result = find_mode(lambda z: -log_density(z), tf.zeros([1, 3], tf.float64))
    >>> result.converged, result.position
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

OPTIMIZERS = ("lbfgs", "bfgs")


@dataclass(frozen=True)
class OptimizerResult:
    """Where the optimiser stopped.

    Attributes:
      position: the best point found, ``(D,)``.
      objective: :math:`-\\log p` there.
      converged: whether the gradient norm fell below the tolerance.
      num_iterations: iterations used from the best start.
      gradient_norm: the largest absolute entry of the gradient at ``position``.
      optimizer: ``"lbfgs"`` or ``"bfgs"``.
      num_initial_points: how many starts were run; ``objectives`` holds each start's final value.
    """

    position: tf.Tensor
    objective: float
    converged: bool
    num_iterations: int
    gradient_norm: float
    optimizer: str
    num_initial_points: int
    objectives: np.ndarray


def find_mode(
    negative_log_density: Any,
    initial_points: tf.Tensor,
    optimizer: str = "lbfgs",
    max_iterations: int = 1000,
    tolerance: float = 1e-8,
) -> OptimizerResult:
    """Minimises ``negative_log_density`` (flat ``(D,)`` to scalar) from each row of ``initial_points``.

    Args:
      negative_log_density: :math:`-\\log p(z)`, differentiable by ``tf.GradientTape``.
      initial_points: ``(n, D)`` starting points.
      optimizer: ``"lbfgs"`` or ``"bfgs"``.
      max_iterations: the most iterations.
      tolerance: convergence when every gradient entry is below this in absolute value.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")

    @tf.function(autograph=False)
    def value_and_gradient(z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tfp.math.value_and_gradient(lambda point: tf.reshape(negative_log_density(point), []), z)

    minimize = tfp.optimizer.lbfgs_minimize if optimizer == "lbfgs" else tfp.optimizer.bfgs_minimize
    # The objective is compiled; the optimiser's loop runs eagerly: tracing its line search
    # costs seconds, more than running it for the small dimensions of probabilistic models.
    results = [
        minimize(value_and_gradient, initial_position=point, tolerance=tolerance, max_iterations=max_iterations)
        for point in tf.unstack(initial_points)
    ]
    objectives = np.array([float(r.objective_value) for r in results])
    best = int(np.argmin(np.where(np.isfinite(objectives), objectives, np.inf)))
    position = results[best].position
    _, gradient = value_and_gradient(position)
    return OptimizerResult(
        position=position,
        objective=float(objectives[best]),
        converged=bool(results[best].converged) and bool(np.isfinite(objectives[best])),
        num_iterations=int(results[best].num_iterations),
        gradient_norm=float(tf.reduce_max(tf.abs(gradient))),
        optimizer=optimizer,
        num_initial_points=int(initial_points.shape[0]),
        objectives=objectives,
    )
