"""The reporting half of a [`LaplaceResult`][laplace_tf.LaplaceResult]: PSIS diagnostics of its
draws and its ArviZ data (``result.diagnose()``, ``result.to_inference_data()``).

Example:
    ```python
    >>> result = lt.fit_laplace(model, observed={"y": y}, seed=0)
    >>> print(result.diagnose()); az.summary(result.to_inference_data())
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.reports.arviz_compat import dataset, make_arviz_data
from laplace_tf.reports.diagnostics import Diagnosis
from laplace_tf.reports.log_density import mode_distance

if TYPE_CHECKING:
    from laplace_tf.models.laplace_result import LaplaceResult


def diagnose(result: LaplaceResult) -> Diagnosis:
    """The Pareto k-hat of the importance weights ``log_p - log_q`` of the result's draws."""
    log_p, log_q = result.log_p(result.unconstrained_draws), result.log_q(result.unconstrained_draws)
    gradient = tfp.math.value_and_gradient(result._log_density, result.mean)[1]
    return Diagnosis.from_log_densities(log_p, log_q, mode_distance(result, gradient))


def to_inference_data(result: LaplaceResult) -> Any:
    """ArviZ data: ``posterior`` (constrained), ``unconstrained_posterior``, ``fit``,
    ``sample_stats`` (``log_p``, ``log_q``) and ``observed_data``."""
    draws = result.unconstrained_draws
    shape = (result.num_chains, int(draws.shape[0]) // result.num_chains)
    coords = {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}
    densities = {"log_p": result.log_p(draws), "log_q": result.log_q(draws)}
    groups = {
        "posterior": _draws_dataset(result.draws, shape, coords),
        "unconstrained_posterior": _draws_dataset(result.unconstrained(draws), shape, coords),
        "sample_stats": dataset(
            {name: (("chain", "draw"), value.numpy().reshape(shape)) for name, value in densities.items()}, coords
        ),
        "fit": _fit_dataset(result),
    }
    if result.observed_data:
        groups["observed_data"] = dataset(
            {name: (_dims(name, np.shape(value)), value) for name, value in result.observed_data.items()}
        )
    return make_arviz_data(groups)


def _fit_dataset(result: LaplaceResult) -> Any:
    """The ``fit`` group: the Gaussian's mean and covariance, and how the mode search ended."""
    rows = result.row_names
    fit = dataset(
        {
            "mean_vector": (("rows",), result.mean.numpy()),
            "covariance_matrix": (("rows", "columns"), result.covariance.numpy()),
        },
        {"rows": rows, "columns": rows},
    )
    optimizer = result.optimizer_result
    fit.attrs |= {
        "jacobian": int(result.jacobian),
        "optimizer": optimizer.optimizer,
        "converged": int(optimizer.converged),
        "num_iterations": optimizer.num_iterations,
        "gradient_norm": optimizer.gradient_norm,
        "objective": optimizer.objective,
    }
    return fit


def _dims(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"{name}_dim_{i}" for i in range(len(shape)))


def _draws_dataset(draws: dict[str, tf.Tensor], shape: tuple[int, int], coords: dict[str, Any]) -> Any:
    variables = {}
    for name, value in draws.items():
        value = np.asarray(value)
        variables[name] = (("chain", "draw", *_dims(name, value.shape[1:])), value.reshape(*shape, *value.shape[1:]))
    return dataset(variables, coords)
