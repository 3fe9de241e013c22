r"""The user-facing Laplace approximation of a trained Keras model.

Around the trained weights $\theta_*$ (the MAP), the posterior is approximated by

$$
p(\theta \mid \mathcal{D}) \approx \mathcal{N}\big(\theta_*, P^{-1}\big), \qquad
P = \frac{1}{T}\, s(\sigma)\, \sum_{n=1}^{N} C_n + \operatorname{diag}(\lambda),
$$

where $C_n$ is the curvature (GGN, empirical Fisher or Hessian) of example $n$'s
negative log-likelihood, $s(\sigma) = \sigma^{-2}$ for regression ($\sigma^{-4}$
with the empirical Fisher) and 1 otherwise, $T$ the temperature and $\lambda$ the
prior precision.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="full")
    >>> la.fit((x_train, y_train))
    >>> la.optimize_prior_precision()
    >>> probs = la.predict(x_test)                       # (N, C), GLM predictive with probit
    ```
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.compiled import cached
from laplace_tf.distribution import current_strategy
from laplace_tf.networks import io
from laplace_tf.networks.curvature import curvature_estimator, noise_power
from laplace_tf.networks.data import as_batches, check_batched, first_inputs
from laplace_tf.networks.functional.gp import NystromCurvature
from laplace_tf.networks.functional.independent_outputs import IndependentOutputsPosterior
from laplace_tf.networks.functional.nystrom import NystromPosterior
from laplace_tf.networks.inputs import cast_inputs, check_declared_inputs, signature
from laplace_tf.networks.laplace_evidence import LaplaceEvidence
from laplace_tf.networks.laplace_predictive import LaplacePredictive
from laplace_tf.networks.laplace_reports import LaplaceReports
from laplace_tf.networks.likelihoods import get_likelihood
from laplace_tf.networks.memory import check_batch_jacobians, check_curvature
from laplace_tf.networks.params import ModelParameters, Subset
from laplace_tf.networks.posterior import (
    FullPosterior,
    NotPositiveDefiniteError,
    Posterior,
    build_posterior,
    host_lapack,
    log_det_with_scalar_prior,
)
from laplace_tf.networks.posterior.kron import KronPosterior, decompose
from laplace_tf.networks.posterior.lowrank import LowRankPosterior
from laplace_tf.networks.prior import expand_prior_precision, validate_prior_mean, validate_prior_precision
from laplace_tf.networks.reward import PairParameters, check_pairs
from laplace_tf.networks.validation import (
    check_flag,
    check_not_stateful,
    check_one_output,
    check_outputs_are_logits,
    check_outputs_are_not_probabilities,
    check_seed,
    check_weights_finite,
    format_bytes,
    positive_int,
    positive_number,
)
from laplace_tf.options import (
    CurvatureType,
    HessianStructure,
    KfacApprox,
    SubsetOfWeights,
    parse_option,
)
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.progress import Progress, peak_memory_bytes
from laplace_tf.seeds import stateless_seed


class NotFittedError(RuntimeError):
    """A method that needs the curvature was called before [`Laplace.fit`][laplace_tf.Laplace.fit]."""


class Laplace(LaplaceEvidence, LaplacePredictive, LaplaceReports):
    """A Laplace approximation over a Keras model's weights.

    Args:
      model: a trained, built ``keras.Model`` whose outputs are logits (classification,
        binary) or means (regression), shape ``(batch, outputs)``.
      likelihood: ``"classification"`` (softmax), ``"regression"`` (Gaussian), ``"binary"``
        (one sigmoid), ``"multilabel"`` (one sigmoid per output, targets ``(N, K)`` of 0/1),
        ``"heteroscedastic"`` (a mean and a noise per target) or ``"reward_modeling"`` (a ``(B, 1)``
        reward model fitted on preference pairs ``(N, 2, ...)``; `laplace_tf.networks.reward`).
      subset_of_weights: ``"last_layer"`` (the default, as in laplace-torch), ``"all"`` trainable
        weights, a list of variable-path patterns (e.g. ``["dense_2/*"]``), or boolean masks per
        variable (a list, ``None`` for an excluded variable, or a dict from path to mask); the
        other weights stay at their trained values.
      hessian_structure: ``"kron"`` (Kronecker-factored per layer; the default, as in
        laplace-torch), ``"full"`` (dense ``P x P``), ``"diag"``, ``"lowrank"`` (top ``rank``
        eigenpairs plus the prior) or ``"gp"`` (function space: the linearised network as a
        Gaussian process conditioned on ``n_subset`` training points, exact in rank
        ``n_subset * outputs``; `laplace_tf.networks.functional.gp`).
      curvature: ``"ggn"`` (generalised Gauss-Newton), ``"ef"`` (empirical Fisher) or
        ``"hessian"`` (exact, by nested tapes).
      prior_precision: a scalar, one value per trainable variable, or one per parameter.
      prior_mean: a scalar or one value per parameter.
      sigma_noise: the observation noise standard deviation (regression only).
      temperature: divides the log-likelihood (and so the curvature); 1 is Bayes' rule.
      memory_limit: bytes the curvature (three copies), one batch's per-example Jacobians, or the
        draws of `to_inference_data` may take, checked before the work; default half of physical
        memory.
      stochastic: with ``hessian_structure="kron"`` and ``curvature="ggn"``, use the Monte-Carlo
        Fisher (``num_samples`` targets drawn from the model per example) instead of the exact GGN;
        it costs ``num_samples`` instead of ``K`` backward passes per batch.
      num_samples: draws per example for ``stochastic=True``.
      kfac_approx: how ``hessian_structure="kron"`` factors a weight that several positions of one
        example share (sequence steps, image patches, recurrent steps, the calls of a shared
        layer): ``"expand"`` treats the positions as examples of their own (exact for one
        example at one position; the convention for per-position outputs); ``"reduce"`` takes each
        example's mean input and summed output gradient over its positions (exact where the
        outputs pool the positions and their inputs agree: sequence or image classification).
        An ``Embedding`` keeps ``"expand"`` (its ``A`` stays diagonal).
      rank: the number of GGN eigenpairs kept by ``hessian_structure="lowrank"`` (at most the
        number of parameters).
      n_subset: the training points a ``"gp"`` Laplace conditions on (all of them if fewer).
      balanced_subset: draw the ``"gp"`` subset evenly across classes (classification).
      n_eigenvalues: with ``"gp"``, keep this many eigenfunctions of the kernel on the subset as
        features and fit the posterior over them to all the data (Nyström, ELLA; no evidence, so
        tune the prior by grid search); ``None`` is the exact GP on the subset.
      independent_outputs: with ``"gp"``, one GP per output (the output Hessian's diagonal; cheaper,
        GLM predictions and the evidence only).
      seed: seeds the Monte-Carlo Fisher's draws and the ``"gp"`` subset.
      strategy: a ``tf.distribute`` strategy for ``fit`` and the predictives (each batch's examples
        split across replicas, results summed or gathered; `distribution`); by
        default the strategy whose scope is active when they run, if any.
    """

    def __init__(
        self,
        model: keras.Model,
        likelihood: str,
        *,
        subset_of_weights: str | Subset = "last_layer",
        hessian_structure: str = "kron",
        curvature: str = "ggn",
        prior_precision: Any = 1.0,
        prior_mean: Any = 0.0,
        sigma_noise: float = 1.0,
        temperature: float = 1.0,
        memory_limit: int | None = None,
        stochastic: bool = False,
        num_samples: int = 1,
        kfac_approx: str = "expand",
        rank: int = 100,
        n_subset: int = 1000,
        balanced_subset: bool = False,
        n_eigenvalues: int | None = None,
        independent_outputs: bool = False,
        seed: int | None = 0,
        strategy: tf.distribute.Strategy | None = None,
    ):
        self.likelihood = get_likelihood(likelihood)
        if isinstance(subset_of_weights, str):
            subset_of_weights = parse_option(SubsetOfWeights, subset_of_weights, "subset_of_weights").value
        self.subset_of_weights = subset_of_weights
        self.hessian_structure = parse_option(HessianStructure, hessian_structure, "hessian_structure")
        self.curvature_type = parse_option(CurvatureType, curvature, "curvature")
        kfac = parse_option(KfacApprox, kfac_approx, "kfac_approx")
        if kfac != KfacApprox.EXPAND and self.hessian_structure != HessianStructure.KRON:
            raise ValueError(f"kfac_approx={kfac.value!r} applies to hessian_structure='kron' only.")
        parameters = PairParameters if self.likelihood.name == LikelihoodName.REWARD_MODELING else ModelParameters
        check_not_stateful(model)  # before the parameters: a subclassed model's last layer is found by a forward pass
        self.params = parameters(model, subset_of_weights)
        check_one_output(getattr(model, "outputs", None))
        check_outputs_are_logits(model, self.likelihood.name)
        sigma_noise, temperature = (
            positive_number(sigma_noise, "sigma_noise"),
            positive_number(temperature, "temperature"),
        )
        if memory_limit is not None:
            memory_limit = positive_int(memory_limit, "memory_limit")
        check_flag(stochastic, "stochastic")
        check_seed(seed)
        if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(f"strategy must be a tf.distribute.Strategy or None, got {type(strategy).__name__}.")
        if self.likelihood.name != LikelihoodName.REGRESSION and sigma_noise != 1.0:
            raise ValueError("sigma_noise applies to likelihood='regression' only; leave it at 1.0.")
        self.model = model
        self.memory_limit = memory_limit
        self.seed = seed
        self.strategy = strategy
        self.options = {
            "temperature": float(temperature),
            "memory_limit": memory_limit,
            "stochastic": stochastic,
            "num_samples": num_samples,
            "kfac_approx": kfac.value,
            "rank": rank,
            "n_subset": n_subset,
            "balanced_subset": balanced_subset,
            "n_eigenvalues": n_eigenvalues,
            "independent_outputs": independent_outputs,
            "seed": seed,
        }
        self.temperature = float(temperature)
        self._sigma_noise = tf.constant(sigma_noise, self.dtype)
        self._prior_precision = validate_prior_precision(prior_precision, self.params.sizes, self.dtype)
        self.prior_mean = validate_prior_mean(prior_mean, self.n_params, self.dtype)
        self.mean = self.params.theta
        self._curvature: tf.Tensor | None = None
        self._sums: Any = None
        self.grid_scores: np.ndarray | None = None
        self._loss: tf.Tensor | None = None
        self.n_data = 0
        self.n_outputs: int | None = None
        self._posterior: Posterior | None = None
        self._decomposition: Any = None  # eigenvalues (full) or eigen-blocks (kron), once per fit
        self._eigenpairs: tuple[tf.Tensor, tf.Tensor] | None = None
        self._input_signature: Any = None  # what predictions' inputs must look like, set by fit
        positive_int(num_samples, "num_samples")
        check_flag(balanced_subset, "balanced_subset")
        check_flag(independent_outputs, "independent_outputs")
        subset = (n_subset, balanced_subset, n_eigenvalues, independent_outputs)
        self._set_up_compiled_functions(model, (num_samples if stochastic else None, kfac), rank, subset)
        check_curvature(self.hessian_structure, self.n_params, self._estimator.elements, self.dtype, memory_limit)

    def _set_up_compiled_functions(
        self,
        model: keras.Model,
        kron: tuple[int | None, KfacApprox],
        rank: int,
        subset: tuple[int, bool, int | None, bool],
    ) -> None:
        """The curvature estimator and the predictive's compiled functions, shared per model.
        ``kron``: the Monte-Carlo Fisher's draws (``None``: exact) and the K-FAC convention."""
        key = (
            self.hessian_structure,
            self.curvature_type,
            self.likelihood.name,
            kron,
            rank,
            subset,
            self.params.cache_key(),
        )
        self._estimator = cached(
            model,
            ("estimator", *key),
            lambda: curvature_estimator(
                self.hessian_structure,
                self.curvature_type,
                self.params,
                self.likelihood,
                mc_samples=kron[0],
                kfac_approx=kron[1],
                rank=rank,
                n_subset=subset[0],
                balanced_subset=subset[1],
                n_eigenvalues=subset[2],
                independent_outputs=subset[3],
            ),
        )
        self._set_up_predictive(model)

    # ----------------------------------------------------------------------------- properties
    @property
    def n_params(self) -> int:
        """The number of parameters $P$ the posterior is over."""
        return self.params.n_params

    @property
    def dtype(self) -> tf.DType:
        """The model's float dtype; all results are in it."""
        return self.params.dtype

    @property
    def prior_precision(self) -> tf.Tensor:
        """The prior precision, in the shape it was given (scalar, per variable or per parameter)."""
        return self._prior_precision

    @prior_precision.setter
    def prior_precision(self, value: Any) -> None:
        self._prior_precision = validate_prior_precision(value, self.params.sizes, self.dtype)
        self._posterior = None

    @property
    def sigma_noise(self) -> tf.Tensor:
        """The observation noise standard deviation (1 for the classifiers)."""
        return self._sigma_noise

    @sigma_noise.setter
    def sigma_noise(self, value: float) -> None:
        if self.likelihood.name != LikelihoodName.REGRESSION:
            raise ValueError("sigma_noise applies to likelihood='regression' only.")
        self._sigma_noise = tf.constant(positive_number(value, "sigma_noise"), self.dtype)
        self._posterior = None

    @property
    def posterior(self) -> Posterior:
        """The Gaussian posterior: a [`FullPosterior`][laplace_tf.FullPosterior],
        [`DiagPosterior`][laplace_tf.DiagPosterior], `KronPosterior` or `LowRankPosterior`."""
        self._require_fitted()
        if self._posterior is None:
            with tf.init_scope():  # built eagerly even on first use inside a tf.function, then cached
                self._posterior = self._build_posterior(self._prior_precision, self._sigma_noise, constant=True)
        return self._posterior

    @property
    def curvature(self) -> tf.Tensor:
        """The summed curvature of the unit-noise, untempered negative log-likelihood."""
        self._require_fitted()
        return self._curvature

    # ------------------------------------------------------------------------------------ fit
    def fit(self, data: Any, batch_size: int | None = None, *, override: bool = True, verbose: bool = True) -> Laplace:
        """Computes the curvature over ``data`` at the model's current weights.

        Args:
          data: a tuple ``(x, y)`` of arrays, or a batched ``tf.data.Dataset`` of ``(x, y)``.
          batch_size: examples per batch for arrays (default 128).
          override: ``False`` adds ``data``'s curvature (and examples) to the previous fit's,
            which must have been at the same weights; not available for ``lowrank``.
          verbose: show a progress bar and a one-line summary.

        Returns:
          ``self``, fitted.
        """
        check_weights_finite([v.path for v in self.model.variables], [v.value for v in self.model.variables])
        previous = None if override else self._previous_fit()
        self.mean = self.params.theta
        first = first_inputs(data)
        if isinstance(self.params, PairParameters):
            check_pairs(first)
        check_batched(data, self.model)
        pair_axes = int(isinstance(self.params, PairParameters))
        check_declared_inputs(first, self.model, pair_axes)
        self.n_outputs = self._output_count(first)
        batches = as_batches(data, batch_size, self._validate_targets)
        started = time.perf_counter()
        total = None if batches.n_batches is None else batches.n_batches * self._estimator.passes
        progress = Progress(total, verbose, unit="batch", label="fit")

        def cast_batches() -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
            for index, (x, y) in enumerate(batches.iterate()):
                if index == 0 and self._estimator.jacobian_params:
                    check_batch_jacobians(
                        len(y), self.n_outputs, self._estimator.jacobian_params, self.dtype, self.memory_limit
                    )
                yield self._cast(x), tf.constant(y, self.dtype)
                progress.add(1)

        seed = stateless_seed(self.seed)
        if previous is not None:  # fresh Monte-Carlo draws for the added data
            seed = tf.random.experimental.stateless_fold_in(seed, self.n_data)
        strategy = current_strategy(self.strategy)
        loss, sums, n_data = self._estimator.fit(self.mean, cast_batches, seed, previous, strategy)
        progress.close()
        if previous is not None:
            loss, n_data = loss + self._loss, n_data + self.n_data
        self._loss, self._sums, self.n_data = loss, sums, n_data
        self._input_signature = signature(first, self.model, pair_axes)
        self._curvature = self._estimator.finalize(sums)
        self._posterior, self._decomposition, self._eigenpairs = None, None, None
        if verbose:
            curvature_bytes = sum(int(np.prod(t.shape)) * t.dtype.size for t in self._curvature_state())
            print(
                f"Laplace fitted: {n_data} examples, {self.n_params:,} parameters, "
                f"{self.hessian_structure.value} {self.curvature_type.value}{self._convention()}, "
                f"curvature {format_bytes(curvature_bytes)} (process peak {format_bytes(peak_memory_bytes())}), "
                f"{time.perf_counter() - started:.1f} s"
            )
            for path, treatment in (self._estimator.treatment or {}).items():
                print(f"  {path}: {treatment}")
        return self

    def _convention(self) -> str:
        """For the fit's summary: kron's K-FAC convention for weights shared across positions."""
        return f" (K-FAC {self.options['kfac_approx']})" if self.hessian_structure == HessianStructure.KRON else ""

    def _output_count(self, first: Any) -> int:
        """The number of outputs: declared by an affine output layer (logits by construction), or
        counted by an eager forward pass on the ``first`` examples, which refuses probabilities.
        The estimator's own pass, while it has something to learn, serves for both (eagerly only
        when the outputs are needed)."""
        x = self._cast(first)
        declared = self.params.declared_output_count()
        prepare = self._estimator.prepare
        outputs = prepare(self.mean, x, outputs_needed=declared is None) if prepare else None
        if outputs is None and declared is None:
            outputs = self.params.apply(self.mean, x)
        if outputs is None:
            return declared
        check_outputs_are_not_probabilities(outputs.numpy(), self.likelihood.name)
        return int(outputs.shape[-1])

    def _curvature_state(self) -> list[tf.Tensor]:
        """The tensors the fit keeps (the curvature sums), flattened."""
        state = self._sums
        if dataclasses.is_dataclass(state):
            state = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
        return [t for t in tf.nest.flatten(state) if isinstance(t, tf.Tensor)]

    def save(self, path: str) -> Any:
        """Writes the fitted Laplace to ``path`` (``.npz``, no pickle; see `io`)."""
        return io.save(self, path)

    def _restore_fit(
        self, *, mean: tf.Tensor, sums: Any, loss: tf.Tensor, n_data: int, n_outputs: int, input_signature: Any
    ) -> None:
        """Sets the state `fit` leaves, from saved values (used by [`load`][laplace_tf.load])."""
        self.mean, self._sums, self._loss = mean, sums, loss
        self.n_data, self.n_outputs = n_data, n_outputs
        self._input_signature = input_signature
        self._curvature = self._estimator.finalize(sums)

    def _previous_fit(self) -> Any:
        """The previous fit's sums, after checking that more data may be added to them."""
        self._require_fitted()
        if not self._estimator.accumulates:
            raise ValueError(
                f"hessian_structure={self.hessian_structure.value!r} cannot add data to a fit; use override=True."
            )
        if not np.array_equal(self.params.theta.numpy(), self.mean.numpy()):
            raise ValueError("The model's weights changed since the last fit; refit with override=True.")
        return self._sums

    def _validate_targets(self, y: np.ndarray) -> np.ndarray:
        return self.likelihood.validate_targets(y, self.n_outputs)

    # ------------------------------------------------------------------------------- internals
    def _build_posterior(self, prior_precision: tf.Tensor, sigma_noise: tf.Tensor, constant: bool = False) -> Posterior:
        """The posterior at these hyperparameters; ``constant``: the cached one, which nothing
        differentiates (built under ``tf.init_scope``, which pauses gradient tapes)."""
        self._check_prior_fits_structure(prior_precision)
        prior = expand_prior_precision(prior_precision, self.params.sizes, self.n_params)
        scale = self._curvature_scale(sigma_noise)
        if self.hessian_structure == HessianStructure.KRON:
            return KronPosterior(self.mean, self._kron_eigenblocks(), scale, prior)
        if isinstance(self._curvature, NystromCurvature):
            return NystromPosterior(self.mean, self._curvature, scale, prior)
        if isinstance(self._curvature, list):  # gp with independent outputs
            return IndependentOutputsPosterior(self.mean, self._curvature, scale, prior)
        if self.hessian_structure in (HessianStructure.LOWRANK, HessianStructure.GP):
            return LowRankPosterior(self.mean, self._curvature, scale, prior)
        try:
            return build_posterior(self.hessian_structure, self.mean, self._curvature, scale, prior, constant=constant)
        except NotPositiveDefiniteError:
            if self.hessian_structure != HessianStructure.FULL or not self._round_off_only():
                raise
            values, vectors = self._curvature_eigenpairs()
            return FullPosterior.from_eigendecomposition(self.mean, scale * tf.maximum(values, 0.0), vectors, prior)

    def _round_off_only(self) -> bool:
        """Whether a PSD curvature (GGN, EF) is indefinite by no more than round-off.

        GGN and EF are positive semi-definite in exact arithmetic, but a float32 sum over many
        examples can leave eigenvalues slightly below zero, which a tiny prior cannot offset; within
        ``P * eps * largest eigenvalue`` they are clipped to zero, beyond it the error stands.
        """
        if self.curvature_type == CurvatureType.HESSIAN or not tf.executing_eagerly():
            return False
        values, _ = self._curvature_eigenpairs()
        tolerance = self.n_params * np.finfo(self.dtype.as_numpy_dtype).eps * float(tf.reduce_max(values))
        return float(tf.reduce_min(values)) >= -tolerance

    def _curvature_eigenpairs(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The dense curvature's eigendecomposition, computed once per fit and only when needed."""
        if self._eigenpairs is None:
            self._eigenpairs = host_lapack.eigh(self._curvature)
        return self._eigenpairs

    def _check_prior_fits_structure(self, prior_precision: tf.Tensor) -> None:
        """A kron posterior needs one prior precision per block: scalar or per variable."""
        per_variable = len(self.params.sizes)
        if (
            self.hessian_structure == HessianStructure.KRON
            and prior_precision.shape.rank == 1
            and prior_precision.shape[0] != per_variable
        ):
            raise ValueError(
                "hessian_structure='kron' takes a scalar or layerwise prior precision (one per trainable "
                f"variable, {per_variable}): a per-parameter prior has no Kronecker eigen-structure."
            )

    def _kron_eigenblocks(self) -> list:
        """The Kronecker factors' eigendecompositions, computed once per fit."""
        if self._decomposition is None:
            with tf.init_scope():
                self._decomposition = decompose(self._curvature)
        return self._decomposition

    def _log_det_posterior_precision(self, prior_precision: tf.Tensor, sigma_noise: tf.Tensor) -> tf.Tensor:
        if self.hessian_structure == HessianStructure.FULL and prior_precision.shape.rank == 0:
            scale = self._curvature_scale(sigma_noise)
            return log_det_with_scalar_prior(self._curvature_eigenvalues(), scale, prior_precision)
        return self._build_posterior(prior_precision, sigma_noise).log_det_precision

    def _curvature_eigenvalues(self) -> tf.Tensor:
        """The dense curvature's eigenvalues, computed once per fit (eagerly, even from a graph)."""
        if self._decomposition is None:
            with tf.init_scope():
                eigenvalues = host_lapack.eigvalsh(self._curvature)
                if self.curvature_type != CurvatureType.HESSIAN:  # PSD: negatives are round-off
                    eigenvalues = tf.maximum(eigenvalues, 0.0)
                self._decomposition = eigenvalues
        return self._decomposition

    def _curvature_scale(self, sigma_noise: tf.Tensor) -> tf.Tensor:
        scale = tf.constant(1.0 / self.temperature, self.dtype)
        if self.likelihood.name == LikelihoodName.REGRESSION:
            scale = scale / sigma_noise ** noise_power(self.curvature_type)
        return scale

    def _inputs(self, x: Any, what: str = "x") -> Any:
        """Inputs validated against those the Laplace was fitted on (``what`` names them in errors),
        for what scores predictions against targets: a reward model's pairs, not its items."""
        view, x = self._view_and_inputs(x, what)
        if view.items:
            raise ValueError(
                f"{what} holds single items, but a reward model is scored on preference pairs (N, 2, ...) "
                "with the index of the preferred item as the target, as it was fitted."
            )
        return x

    def _cast(self, x: Any) -> Any:
        """Float inputs in the model's dtype; integer inputs (e.g. token ids) as they are."""
        return cast_inputs(x, self.dtype)

    def _require_fitted(self) -> None:
        if self._curvature is None:
            raise NotFittedError("This Laplace is not fitted yet: call la.fit((x, y)) first.")
