"""The mode of a log density by quasi-Newton optimisation, from one or several starts.

Minimises $-\\log p(z)$ over flat $z \\in \\mathbb{R}^D$ with L-BFGS (default) or BFGS
from ``scipy.optimize``, the objective and its exact gradient compiled once with ``tf.function``.
(TensorFlow Probability's optimisers do the same iterations, but tracing their line search costs
seconds and running it eagerly a quarter of a second per iteration; with them ``fit_laplace`` was
2 to 7 times slower than pymc-extras', see docs/benchmarks_models.md for the figures now.) The
result is the start that reached the lowest objective, with its convergence flag, iteration
count and gradient.

Example:
    ```python
    >>> result = find_mode(lambda z: -log_density(z), tf.zeros([1, 3], tf.float64))
    >>> result.converged, result.position
    ```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import optimize

from laplace_tf.compiled import separate_tf_function

SCIPY_METHODS = {"lbfgs": "L-BFGS-B", "bfgs": "BFGS"}
OPTIMIZERS = tuple(SCIPY_METHODS)


@dataclass(frozen=True)
class OptimizerResult:
    """Where the optimiser stopped.

    Attributes:
      position: the best point found, ``(D,)``.
      objective: $-\\log p$ there.
      converged: whether the gradient norm fell below the tolerance.
      num_iterations: iterations used from the best start.
      gradient: the objective's gradient at ``position``; ``gradient_norm`` its largest absolute entry.
      optimizer: ``"lbfgs"`` or ``"bfgs"``.
      num_initial_points: how many starts were run; ``objectives`` holds each start's final value.
    """

    position: tf.Tensor
    objective: float
    converged: bool
    num_iterations: int
    gradient: tf.Tensor
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
      negative_log_density: $-\\log p(z)$, differentiable by ``tf.GradientTape``.
      initial_points: ``(n, D)`` starting points.
      optimizer: ``"lbfgs"`` or ``"bfgs"``.
      max_iterations: the most iterations.
      tolerance: convergence when every gradient entry is below this in absolute value.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}.")

    def value_and_gradient_eager(z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tfp.math.value_and_gradient(lambda point: tf.reshape(negative_log_density(point), []), z)

    value_and_gradient = separate_tf_function(value_and_gradient_eager)  # a fit per model: no retracing warning

    dtype = initial_points.dtype

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = value_and_gradient(tf.constant(z, dtype))
        return float(value), gradient.numpy().astype(np.float64)

    options = {"maxiter": max_iterations, "gtol": tolerance}
    if optimizer == "lbfgs":  # stop on the gradient, not on a small relative decrease of the objective
        options["ftol"] = float(np.finfo(dtype.as_numpy_dtype).eps)
    results = [
        optimize.minimize(objective, point, jac=True, method=SCIPY_METHODS[optimizer], options=options)
        for point in initial_points.numpy().astype(np.float64)
    ]
    objectives = np.array([result.fun for result in results])
    best = int(np.argmin(np.where(np.isfinite(objectives), objectives, np.inf)))
    position = tf.constant(results[best].x, dtype)
    _, gradient = value_and_gradient(position)
    return OptimizerResult(
        position=position,
        objective=float(objectives[best]),
        converged=bool(results[best].success) and bool(np.isfinite(objectives[best])),
        num_iterations=int(results[best].nit),
        gradient=gradient,
        gradient_norm=float(tf.reduce_max(tf.abs(gradient))),
        optimizer=optimizer,
        num_initial_points=int(initial_points.shape[0]),
        objectives=objectives,
    )
