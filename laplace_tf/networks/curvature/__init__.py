"""Curvature of the summed negative log-likelihood, one structure per module.

`curvature_estimator` gives, for a structure (``full``, ``diag``, ``kron``) and a curvature
type (``ggn``, ``ef``, ``hessian``), an object whose compiled ``batch(theta, x, y, seed)`` maps a
batch to its summed loss and its curvature sums, and whose ``finalize`` turns the sums over the
data set into the curvature; [`Laplace`][laplace_tf.Laplace] sums the batches in between.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import tensorflow as tf

from laplace_tf.distribution import summed_over_replicas
from laplace_tf.networks.curvature import diag, full, lowrank, output_layer
from laplace_tf.networks.curvature.compiling import compile_for_batches
from laplace_tf.networks.curvature.diag_probes import ProbedDiagonal
from laplace_tf.networks.curvature.jacobians import loss_gradients
from laplace_tf.networks.curvature.kron import KronPlan
from laplace_tf.networks.curvature.output_layer import shared_output_features
from laplace_tf.networks.curvature.probed_jacobians import jacobians_function
from laplace_tf.networks.functional import gp
from laplace_tf.networks.inputs import n_examples
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters
from laplace_tf.options import CurvatureType, HessianStructure, KfacApprox

STRUCTURES: dict[HessianStructure, ModuleType] = {HessianStructure.FULL: full, HessianStructure.DIAG: diag}


Batches = Callable[[], Iterator[tuple[tf.Tensor, tf.Tensor]]]


@dataclass
class CurvatureEstimator:
    """How a structure turns a data set into its curvature.

    ``fit(theta, batches, seed, previous, strategy)`` returns the summed loss at ``theta``, the
    curvature's running sums (added to ``previous`` sums when given) and the number of examples,
    each batch split across the ``strategy``'s replicas if one is given, making
    ``passes`` passes over ``batches()``; ``finalize(sums)`` is the curvature. ``accumulates`` says
    whether sums from several ``fit`` calls may be added (not for ``lowrank``); ``treatment`` says,
    for kron, which variables got Kronecker blocks. ``elements`` is the curvature's size in numbers;
    ``jacobian_params`` how many parameters a batch's per-example Jacobians ``(B, K, .)`` span (0
    when the structure forms none). ``prepare(theta, x, outputs_needed)``, if given, is a forward
    pass on the first examples that tells the estimator what the fit's trace cannot (their outputs
    when needed, run eagerly; ``None`` when it only traced, or an earlier call already told).
    """

    fit: Callable[..., tuple[tf.Tensor, Any, int]]
    finalize: Callable[[Any], Any]
    elements: int
    jacobian_params: int = 0
    passes: int = 1
    accumulates: bool = True
    treatment: dict[str, str] | None = None
    prepare: Callable[[tf.Tensor, Any, bool], tf.Tensor | None] | None = None


def curvature_estimator(
    structure: HessianStructure,
    curvature_type: CurvatureType,
    params: ModelParameters,
    likelihood: Likelihood,
    mc_samples: int | None = None,
    kfac_approx: KfacApprox = KfacApprox.EXPAND,
    rank: int | None = None,
    n_subset: int | None = None,
    balanced_subset: bool = False,
    n_eigenvalues: int | None = None,
    independent_outputs: bool = False,
) -> CurvatureEstimator:
    """The estimator for a structure and curvature type.

    Args:
      mc_samples: Monte-Carlo Fisher draws per example (kron only); ``None`` for exact.
      kfac_approx: kron's convention for weights shared across an example's positions.
      rank: the number of eigenpairs kept (lowrank only).
      n_subset: the training points the GP conditions on (gp only).
      balanced_subset: draw them evenly across classes (gp only).
      n_eigenvalues: the Nyström features kept (gp only; ``None`` for the exact subset GP).
      independent_outputs: one GP per output (exact gp only).
    """
    if mc_samples is not None and structure != HessianStructure.KRON:
        raise ValueError("stochastic=True (Monte-Carlo Fisher) is available with hessian_structure='kron'.")
    if structure == HessianStructure.KRON:
        plan = KronPlan(params, likelihood, curvature_type, mc_samples, reduce=kfac_approx == KfacApprox.REDUCE)
        batch = compile_for_batches(plan.batch, params.model)
        exact_ggn = curvature_type == CurvatureType.GGN and mc_samples is None
        features = shared_output_features(params) if exact_ggn else None
        if features is not None:  # a Dense output layer's own weights: A and G from its features
            sums = functools.partial(output_layer.kronecker_sums, input_dim=features.rule.input_dim)
            batch = output_layer.features_first(features, likelihood, sums, batch)
        return CurvatureEstimator(
            _summed_fit(batch),
            plan.finalize,
            elements=plan.elements(),
            jacobian_params=plan.jacobian_params,
            treatment=plan.treatment(),
        )
    if independent_outputs and structure != HessianStructure.GP:
        raise ValueError("independent_outputs=True is for hessian_structure='gp'.")
    if structure == HessianStructure.GP:
        if curvature_type != CurvatureType.GGN:
            raise ValueError("hessian_structure='gp' works with curvature='ggn'.")
        if isinstance(n_subset, bool) or not isinstance(n_subset, int) or n_subset < 1:
            raise ValueError(f"n_subset must be a positive integer, got {n_subset!r}.")
        subset_elements = params.n_params * n_subset * gp.output_count(params.model)
        if n_eigenvalues is None:
            fit = gp.gp_fit(params, likelihood, n_subset, balanced_subset, compile_for_batches, independent_outputs)
            return CurvatureEstimator(
                fit, _identity, elements=subset_elements, jacobian_params=params.n_params, passes=2, accumulates=False
            )
        if independent_outputs:
            raise ValueError("independent_outputs=True is for the exact GP; leave n_eigenvalues=None.")
        if isinstance(n_eigenvalues, bool) or not isinstance(n_eigenvalues, int) or n_eigenvalues < 1:
            raise ValueError(f"n_eigenvalues must be a positive integer or None, got {n_eigenvalues!r}.")
        fit = gp.nystrom_fit(params, likelihood, n_subset, balanced_subset, n_eigenvalues, compile_for_batches)
        return CurvatureEstimator(
            fit, _identity, elements=subset_elements, jacobian_params=params.n_params, passes=3, accumulates=False
        )
    if structure == HessianStructure.LOWRANK:
        if curvature_type != CurvatureType.GGN:
            raise ValueError("hessian_structure='lowrank' works with curvature='ggn'.")
        if not isinstance(rank, int) or not 1 <= rank <= params.n_params:
            raise ValueError(
                f"rank must be an integer in [1, {params.n_params}] (the number of parameters), got {rank!r}."
            )
        return CurvatureEstimator(
            _lowrank_fit(params, likelihood, rank),
            _identity,
            elements=params.n_params * (rank + lowrank.OVERSAMPLING),
            jacobian_params=0 if params.vectorize else params.n_params,
            passes=2 + lowrank.POWER_ITERATIONS,
            accumulates=False,
        )
    batch_fn = _dense_batch_function(STRUCTURES[structure], curvature_type, params, likelihood)
    prepare = None
    elements = params.n_params**2 if structure == HessianStructure.FULL else params.n_params
    jacobian_params = params.n_params if curvature_type == CurvatureType.GGN else 0
    if structure == HessianStructure.DIAG and curvature_type != CurvatureType.HESSIAN:
        probed = ProbedDiagonal(params, likelihood, curvature_type)
        if probed.rules:  # the probes' own per-example gradients come in chunks of columns that fit
            jacobian_params = probed.jacobian_params if jacobian_params else 0
            batch_fn, prepare = (lambda theta, x, y, seed: probed.batch(theta, x, y)), probed.prepare
    batch = compile_for_batches(batch_fn, params.model)
    features = shared_output_features(params) if curvature_type == CurvatureType.GGN else None
    if features is not None:  # a Dense output layer's own weights: the features' closed forms
        by_features = output_layer.ggn if structure == HessianStructure.FULL else output_layer.ggn_diagonal
        batch, prepare = output_layer.features_first(features, likelihood, by_features, batch), None
    return CurvatureEstimator(
        _summed_fit(batch), _identity, elements=elements, jacobian_params=jacobian_params, prepare=prepare
    )


def _identity(sums: Any) -> Any:
    return sums


def _summed_fit(batch: Callable) -> Callable:
    """One pass: the batches' curvature sums added up (to ``previous`` sums, if any)."""

    def fit(
        theta: tf.Tensor, batches: Batches, seed: tf.Tensor, previous: Any = None, strategy: Any = None
    ) -> tuple[tf.Tensor, Any, int]:
        run = batch if strategy is None else summed_over_replicas(strategy, batch, sharded=(1, 2))
        loss, sums, n_data = tf.zeros([], theta.dtype), previous, 0
        for index, (x, y) in enumerate(batches()):
            batch_loss, batch_sums = run(theta, x, y, tf.random.experimental.stateless_fold_in(seed, index))
            loss += batch_loss
            sums = batch_sums if sums is None else tf.nest.map_structure(tf.add, sums, batch_sums)
            n_data += n_examples(x)
        if n_data == 0:
            raise ValueError("The dataset yielded no batches; nothing to fit.")
        return loss, sums, n_data

    return fit


def _lowrank_fit(params: ModelParameters, likelihood: Likelihood, rank: int) -> Callable:
    """Several passes of GGN-matrix products, then the randomised eigendecomposition."""
    product = compile_for_batches(lowrank.ggn_matmul(params, likelihood), params.model)

    def fit(
        theta: tf.Tensor, batches: Batches, seed: tf.Tensor, previous: Any = None, strategy: Any = None
    ) -> tuple[tf.Tensor, Any, int]:
        run = product if strategy is None else summed_over_replicas(strategy, product, sharded=(1, 2))
        last_pass: dict[str, Any] = {}

        def over_data(vectors: tf.Tensor) -> tf.Tensor:
            total, loss, n_data = None, tf.zeros([], theta.dtype), 0
            for x, y in batches():
                batch_loss, batch_product = run(theta, x, y, vectors)
                total = batch_product if total is None else total + batch_product
                loss, n_data = loss + batch_loss, n_data + n_examples(x)
            if total is None:
                raise ValueError("The dataset yielded no batches; nothing to fit.")
            last_pass.update(loss=loss, n_data=n_data)
            return total

        curvature = lowrank.randomized_eigendecomposition(over_data, params.n_params, rank, theta.dtype, seed)
        return last_pass["loss"], curvature, last_pass["n_data"]

    return fit


def _dense_batch_function(
    module: ModuleType, curvature_type: CurvatureType, params: ModelParameters, likelihood: Likelihood
) -> Callable:
    """``(theta, x, y, seed) -> (summed loss, curvature)`` for the full or diag structure."""
    apply = params.apply
    jacobians_of = jacobians_function(params) if curvature_type == CurvatureType.GGN else None

    def ggn(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        f, jacobians = jacobians_of(theta, x)
        loss = tf.reduce_sum(likelihood.loss(f, y))
        return loss, module.from_jacobians(jacobians, likelihood.hessian_times(f, jacobians))

    def empirical_fisher(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        losses, gradients = loss_gradients(apply, likelihood, theta, x, y, params.vectorize)
        return tf.reduce_sum(losses), module.from_gradients(gradients)

    def exact_hessian(theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def batch_loss(t: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(likelihood.loss(apply(t, x), y))

        return batch_loss(theta), module.from_loss(batch_loss, theta, params.vectorize)

    chosen = {CurvatureType.GGN: ggn, CurvatureType.EF: empirical_fisher, CurvatureType.HESSIAN: exact_hessian}[
        curvature_type
    ]
    return lambda theta, x, y, seed: chosen(theta, x, y)


def noise_power(curvature_type: CurvatureType) -> int:
    """The power of $1/\\sigma$ that scales a unit-noise regression curvature.

    GGN and Hessian of $\\lVert y - f\\rVert^2 / (2\\sigma^2)$ scale as
    $\\sigma^{-2}$; the empirical Fisher, an outer product of gradients, as
    $\\sigma^{-4}$.
    """
    return 4 if curvature_type == CurvatureType.EF else 2
