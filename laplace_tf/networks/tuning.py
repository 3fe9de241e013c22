r"""Tuning the prior precision (and observation noise): by the marginal likelihood, or by a grid search.

Grid search (`grid_search_prior_precision`) scores the predictive at each prior precision
on a log-spaced grid against held-out data, by NLL (default), ECE or Brier score, and keeps the
best.

The hyperparameters $\eta = (\log \lambda, \log \sigma)$ are found by maximising the
Laplace evidence [`Laplace.log_marginal_likelihood`][laplace_tf.Laplace.log_marginal_likelihood] with L-BFGS.
Where the evidence is a closed-form function of the curvature's eigenvalues (``diag``; ``kron``
with a scalar or layerwise prior; ``full`` with a scalar prior; see
`laplace_tf.networks.evidence_spectrum`), it and its gradient are NumPy arithmetic: nothing is traced and
no TensorFlow op runs per step. Otherwise the evidence is compiled once per tuning. Either way
scipy's L-BFGS-B minimises it. Optimising in log space keeps them positive, and dividing the
evidence by the number of examples keeps L-BFGS's first steps to a sensible size; L-BFGS stops
when the gradient norm falls below the tolerance, so the result is the optimum rather than the
end of a fixed number of steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import tensorflow as tf

import laplace_tf as lt
from laplace_tf.compiled import separate_tf_function
from laplace_tf.networks.evidence_spectrum import curvature_spectrum
from laplace_tf.networks.inputs import n_examples
from laplace_tf.options import GridMetric, PriorStructure
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.progress import Progress


@dataclass
class EvidenceObjective:
    r"""The negative log evidence per example as a function of $\eta = (\log \lambda, [\log \sigma])$.

    Attributes:
      start: $\eta$ at the Laplace's current prior precision (and noise), float64.
      value_and_gradient: $\eta \mapsto (-\log Z / N, \nabla_\eta)$ on float64 arrays.
      unpack: $\eta \mapsto$ (prior precision in the tuned shape, noise or ``None``).
    """

    start: np.ndarray
    value_and_gradient: Callable[[np.ndarray], tuple[float, np.ndarray]]
    unpack: Callable[[Any], tuple[Any, Any]]


def evidence_objective(la: lt.Laplace, structure: PriorStructure, optimize_sigma_noise: bool) -> EvidenceObjective:
    """The evidence of a fitted Laplace over a prior of ``structure`` (and the noise, if asked)."""
    log_prior = _initial_log_prior(la, structure)
    n_prior = len(log_prior)
    start = np.append(log_prior, np.log(float(la.sigma_noise))) if optimize_sigma_noise else log_prior

    def unpack(eta: Any) -> tuple[Any, Any]:
        """(prior, sigma or None) from log values: tensors inside the compiled evidence, arrays after."""
        exp = tf.exp if isinstance(eta, tf.Tensor) else np.exp
        prior = exp(eta[:n_prior])
        return (prior[0] if structure == PriorStructure.SCALAR else prior), (
            exp(eta[n_prior]) if optimize_sigma_noise else None
        )

    return EvidenceObjective(start, _negative_evidence(la, structure, optimize_sigma_noise, unpack), unpack)


def tune_prior_precision(
    la: lt.Laplace,
    structure: PriorStructure,
    optimize_sigma_noise: bool,
    *,
    max_iterations: int,
    tolerance: float,
    verbose: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The evidence-maximising prior precision (and noise, if asked), as tensors.

    The objective is the closed-form evidence of the curvature's spectrum, in NumPy, when
    the structure has one, else a compiled `log_marginal_likelihood`; either way scipy's L-BFGS-B
    minimises it in log space.
    """
    objective = evidence_objective(la, structure, optimize_sigma_noise)
    start, negative_evidence, unpack = objective.start, objective.value_and_gradient, objective.unpack
    n_prior = len(start) - int(optimize_sigma_noise)
    progress = Progress(None, verbose, unit="evaluation", label="prior tuning (marginal likelihood)")

    def value_and_gradient(position: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = negative_evidence(position)
        progress.add(1, values=[("negative log evidence per example", value)])
        return value, gradient

    floor = max(tolerance, np.sqrt(np.finfo(la.dtype.as_numpy_dtype).eps))

    def minimise(position: np.ndarray) -> Any:
        options = {"maxiter": max_iterations, "gtol": tolerance, "ftol": 0.0}
        return scipy.optimize.minimize(value_and_gradient, position, jac=True, method="L-BFGS-B", options=options)

    result = minimise(start)
    if not _reached_optimum(result, floor):  # a far start can make L-BFGS's first step overshoot
        retry = minimise(np.concatenate([np.zeros(n_prior), start[n_prior:]]))
        if _reached_optimum(retry, floor) or not _is_finite(result):
            result = retry
    progress.close()
    if not _is_finite(result):
        raise FloatingPointError(
            "Prior optimisation failed (the evidence became non-finite); try a different starting "
            "prior_precision, or check the curvature (curvature='ggn' is always positive semi-definite)."
        )
    if not _reached_optimum(result, floor):
        warnings.warn(
            f"Prior optimisation stopped after {result.nit} iterations without converging "
            f"(gradient norm {np.linalg.norm(result.jac):.3g}); raise max_iterations or "
            "start from another prior_precision.",
            stacklevel=3,
        )
    prior, sigma = unpack(result.x)
    return tf.constant(prior, la.dtype), None if sigma is None else tf.constant(sigma, la.dtype)


def _negative_evidence(la: lt.Laplace, structure: PriorStructure, optimize_sigma_noise: bool, unpack: Any) -> Any:
    """``eta -> (-evidence / N, its gradient)`` on float64 arrays: NumPy arithmetic on the
    spectrum when there is a closed form (nothing traced), else a compiled function of the full
    evidence."""
    spectrum = curvature_spectrum(la, structure)
    if spectrum is not None:
        n_prior, fixed_log_sigma = spectrum.n_groups, float(np.log(float(la.sigma_noise)))

        def closed_form(eta: np.ndarray) -> tuple[float, np.ndarray]:
            log_sigma = eta[n_prior] if optimize_sigma_noise else fixed_log_sigma
            evidence, gradient_prior, gradient_sigma = spectrum.evidence_and_gradient(eta[:n_prior], log_sigma)
            gradient = np.append(gradient_prior, gradient_sigma) if optimize_sigma_noise else gradient_prior
            return -evidence / la.n_data, -gradient / la.n_data

        return closed_form

    def value_and_gradient(eta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(eta)
            prior, sigma = unpack(eta)
            value = -la.log_marginal_likelihood(prior_precision=prior, sigma_noise=sigma) / la.n_data
        return value, tape.gradient(value, eta)

    compiled = separate_tf_function(value_and_gradient)  # one per Laplace: no retracing warning across them

    def evaluate(eta: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = compiled(tf.constant(eta, la.dtype))
        return float(value), gradient.numpy().astype(np.float64)

    return evaluate


DEFAULT_GRID = np.logspace(-4, 4, 41)


def grid_search_prior_precision(
    la: lt.Laplace, val_data: tuple, grid: np.ndarray | None, metric: GridMetric, verbose: bool
) -> tuple[float, np.ndarray]:
    """The scalar prior precision on ``grid`` whose predictive scores best on ``val_data``.

    Returns the best value and the score of every grid point (lower is better).
    """
    if not (isinstance(val_data, (tuple, list)) and len(val_data) == 2):
        raise ValueError("method='gridsearch' needs val_data=(x_val, y_val).")
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or not np.all(grid > 0):
        raise ValueError("grid must be a non-empty array of positive, finite prior precisions.")
    x_val, y_val = val_data
    x_val = la._inputs(x_val, "val_data's x")
    y_val = np.asarray(y_val)
    if n_examples(x_val) != len(y_val):
        raise ValueError(f"val_data: x has {n_examples(x_val)} examples but y has {len(y_val)}; they must match.")
    y_val = la.likelihood.validate_targets(y_val, la.n_outputs)
    score = _scorer(la, metric)
    progress = Progress(len(grid), verbose, unit="prior", label="prior tuning (grid search)")
    scores = []
    for value in grid:
        la.prior_precision = float(value)
        scores.append(score(x_val, y_val))
        progress.add(1)
    progress.close()
    scores = np.asarray(scores)
    return float(grid[int(np.nanargmin(scores))]), scores


def _scorer(la: lt.Laplace, metric: GridMetric):
    """``(x, one-hot or (N, K) targets) -> score`` for the likelihood (lower is better): the
    report's calibration metrics, which the grid search reaches when it runs."""
    from laplace_tf.reports import calibration
    from laplace_tf.reports.report import multilabel_report

    name = la.likelihood.outcome
    if name in (LikelihoodName.REGRESSION, LikelihoodName.HETEROSCEDASTIC):
        if metric != GridMetric.NLL:
            raise ValueError(f"metric={metric.value!r} is for classification; regression uses 'nll'.")
        return lambda x, y: float(-tf.reduce_mean(la.predictive_distribution(x).log_prob(y)))
    metric_fn = {
        GridMetric.NLL: calibration.negative_log_likelihood,
        GridMetric.ECE: calibration.expected_calibration_error,
        GridMetric.BRIER: calibration.brier_score,
    }[metric]

    def score(x: np.ndarray, y: np.ndarray) -> float:
        probs = la.predict(x).numpy()
        if name == LikelihoodName.MULTILABEL:  # the pooled metric of the multilabel report
            return multilabel_report({"Laplace": probs}, y).metrics["Laplace"][metric.value]
        if name == LikelihoodName.BINARY:
            probs = np.concatenate([1 - probs, probs], axis=1)
            return metric_fn(probs, y[:, 0].astype(int))
        return metric_fn(probs, np.argmax(y, axis=1))

    return score


def _is_finite(result: Any) -> bool:
    return bool(np.all(np.isfinite(result.x)) and np.isfinite(result.fun))


def _reached_optimum(result: Any, floor: float) -> bool:
    """Converged, or stopped with a gradient at the level the dtype's precision allows.

    A line search that can make no more progress at the float precision floor reports failure;
    what matters is whether the gradient vanished.
    """
    return _is_finite(result) and (bool(result.success) or float(np.linalg.norm(result.jac)) <= floor)


def _initial_log_prior(la: lt.Laplace, structure: PriorStructure) -> np.ndarray:
    """The log of the current prior precision, reduced to the shape being tuned by means (in log
    space, where a few extreme values should not dominate the start); float64 NumPy."""
    prior = np.asarray(la.prior_precision, np.float64)
    log_per_parameter = np.log(
        np.broadcast_to(prior, [la.n_params])
        if prior.ndim == 0 or prior.size == la.n_params
        else np.repeat(prior, la.params.sizes)
    )
    if structure == PriorStructure.DIAG:
        return log_per_parameter
    variable = la.params.variable_index()
    log_per_variable = np.bincount(variable, log_per_parameter) / np.bincount(variable)
    if structure == PriorStructure.LAYERWISE:
        return log_per_variable
    return np.array([log_per_variable.mean()])
