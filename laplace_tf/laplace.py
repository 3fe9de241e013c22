r"""The user-facing Laplace approximation of a trained Keras model.

Around the trained weights :math:`\theta_*` (the MAP), the posterior is approximated by

.. math::

    p(\theta \mid \mathcal{D}) \approx \mathcal{N}\big(\theta_*, P^{-1}\big), \qquad
    P = \frac{1}{T}\, s(\sigma)\, \sum_{n=1}^{N} C_n + \operatorname{diag}(\lambda),

where :math:`C_n` is the curvature (GGN, empirical Fisher or Hessian) of example :math:`n`'s
negative log-likelihood, :math:`s(\sigma) = \sigma^{-2}` for regression (:math:`\sigma^{-4}`
with the empirical Fisher) and 1 otherwise, :math:`T` the temperature and :math:`\lambda` the
prior precision.

Example::

    >>> la = lt.Laplace(model, "classification", hessian_structure="full")
    >>> la.fit((x_train, y_train))
    >>> la.optimize_prior_precision()
    >>> probs = la.predict(x_test)                       # (N, C), GLM predictive with probit
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf import kron_predictive, last_layer, predictive
from laplace_tf.compiled import cached
from laplace_tf.curvature import compile_for_batches, curvature_estimator, noise_power
from laplace_tf.curvature.jacobians import output_jacobians
from laplace_tf.data import as_batches, as_inputs, first_inputs
from laplace_tf.kron_predictive import dense_rules, factors_function
from laplace_tf.last_layer import dense_output_rule, features_function
from laplace_tf.likelihoods import get_likelihood
from laplace_tf.marglik import log_marginal_likelihood
from laplace_tf.options import (
    CurvatureType,
    HessianStructure,
    LinkApprox,
    PredType,
    PriorStructure,
    SubsetOfWeights,
    parse_option,
)
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.params import ModelParameters, Subset
from laplace_tf.posterior import Posterior, build_posterior, log_det_with_scalar_prior
from laplace_tf.posterior.kron import KronPosterior, decompose
from laplace_tf.posterior.lowrank import LowRankPosterior
from laplace_tf.prior import as_tensor, expand_prior_precision, validate_prior_mean, validate_prior_precision
from laplace_tf.seeds import stateless_seed
from laplace_tf.tuning import tune_prior_precision
from laplace_tf.validation import check_dense_memory, check_weights_finite

tfd = tfp.distributions
PREDICT_BATCH_SIZE = 256
JACOBIAN_ELEMENTS_PER_BATCH = 2**25  # caps a predictive batch's (B, K, P) Jacobians at 128 MiB in float32


class NotFittedError(RuntimeError):
    """A method that needs the curvature was called before :meth:`Laplace.fit`."""


class Laplace:
    """A Laplace approximation over a Keras model's weights.

    Args:
      model: a trained, built ``keras.Model`` whose outputs are logits (classification,
        binary) or means (regression), shape ``(batch, outputs)``.
      likelihood: ``"classification"`` (softmax), ``"regression"`` (Gaussian) or ``"binary"``.
      subset_of_weights: ``"all"`` trainable weights, ``"last_layer"``, a list of
        variable-path patterns (e.g. ``["dense_2/*"]``), or boolean masks per variable (a list,
        ``None`` for an excluded variable, or a dict from path to mask); the other weights stay
        at their trained values.
      hessian_structure: ``"full"`` (dense ``P x P``) or ``"diag"``.
      curvature: ``"ggn"`` (generalised Gauss-Newton), ``"ef"`` (empirical Fisher) or
        ``"hessian"`` (exact, by nested tapes).
      prior_precision: a scalar, one value per trainable variable, or one per parameter.
      prior_mean: a scalar or one value per parameter.
      sigma_noise: the observation noise standard deviation (regression only).
      temperature: divides the log-likelihood (and so the curvature); 1 is Bayes' rule.
      memory_limit: bytes a ``full`` structure may take; default half of physical memory.
      stochastic: with ``hessian_structure="kron"`` and ``curvature="ggn"``, use the Monte-Carlo
        Fisher (``num_samples`` targets drawn from the model per example) instead of the exact GGN;
        it costs ``num_samples`` instead of ``K`` backward passes per batch.
      num_samples: draws per example for ``stochastic=True``.
      rank: the number of GGN eigenpairs kept by ``hessian_structure="lowrank"`` (at most the
        number of parameters).
      seed: seeds the Monte-Carlo Fisher's draws.
    """

    def __init__(
        self,
        model: keras.Model,
        likelihood: str,
        *,
        subset_of_weights: str | Subset = "all",
        hessian_structure: str = "full",
        curvature: str = "ggn",
        prior_precision: Any = 1.0,
        prior_mean: Any = 0.0,
        sigma_noise: float = 1.0,
        temperature: float = 1.0,
        memory_limit: int | None = None,
        stochastic: bool = False,
        num_samples: int = 1,
        rank: int = 100,
        seed: int | None = 0,
    ):
        self.likelihood = get_likelihood(likelihood)
        if isinstance(subset_of_weights, str):
            subset_of_weights = parse_option(SubsetOfWeights, subset_of_weights, "subset_of_weights").value
        self.subset_of_weights = subset_of_weights
        self.hessian_structure = parse_option(HessianStructure, hessian_structure, "hessian_structure")
        self.curvature_type = parse_option(CurvatureType, curvature, "curvature")
        self.params = ModelParameters(model, subset_of_weights)
        _check_outputs_are_logits(model, self.likelihood.name)
        if self.hessian_structure == HessianStructure.FULL:
            check_dense_memory(self.n_params, self.dtype, memory_limit)
        if not sigma_noise > 0 or not temperature > 0:
            raise ValueError(f"sigma_noise and temperature must be positive, got {sigma_noise} and {temperature}.")
        if self.likelihood.name != LikelihoodName.REGRESSION and sigma_noise != 1.0:
            raise ValueError("sigma_noise applies to likelihood='regression' only; leave it at 1.0.")
        self.model = model
        self.seed = seed
        self.temperature = float(temperature)
        self._sigma_noise = tf.constant(sigma_noise, self.dtype)
        self._prior_precision = validate_prior_precision(prior_precision, self.params.sizes, self.dtype)
        self.prior_mean = validate_prior_mean(prior_mean, self.n_params, self.dtype)
        self.mean = self.params.theta
        self._curvature: tf.Tensor | None = None
        self._loss: tf.Tensor | None = None
        self.n_data = 0
        self.n_outputs: int | None = None
        self._posterior: Posterior | None = None
        self._eigenvalues: tf.Tensor | None = None
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        mc_samples = num_samples if stochastic else None
        key = (
            self.hessian_structure,
            self.curvature_type,
            self.likelihood.name,
            mc_samples,
            rank,
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
                mc_samples=mc_samples,
                rank=rank,
            ),
        )
        apply = self.params.apply
        self._jacobians = cached(
            model,
            ("jacobians", self.params.cache_key()),
            lambda: compile_for_batches(lambda theta, x: output_jacobians(apply, theta, x)),
        )
        rule = dense_output_rule(self.params)
        self._features = (
            None
            if rule is None
            else cached(model, ("features", self.params.cache_key()), lambda: features_function(self.params, rule))
        )
        self._dense_rules = dense_rules(self.params) if self.hessian_structure == HessianStructure.KRON else None
        self._layer_factors = (
            None
            if self._features is not None or self._dense_rules is None
            else cached(
                model, ("factors", self.params.cache_key()), lambda: factors_function(self.params, self._dense_rules)
            )
        )
        self._outputs_at = cached(
            model,
            ("outputs", self.params.cache_key()),
            lambda: tf.function(
                lambda thetas, x: tf.vectorized_map(lambda theta: apply(theta, x), thetas), reduce_retracing=True
            ),
        )

    # ----------------------------------------------------------------------------- properties
    @property
    def n_params(self) -> int:
        """The number of parameters :math:`P` the posterior is over."""
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
        """The observation noise standard deviation (1 for classification and binary)."""
        return self._sigma_noise

    @sigma_noise.setter
    def sigma_noise(self, value: float) -> None:
        if self.likelihood.name != LikelihoodName.REGRESSION:
            raise ValueError("sigma_noise applies to likelihood='regression' only.")
        if not float(value) > 0:
            raise ValueError(f"sigma_noise must be positive, got {value}.")
        self._sigma_noise = tf.constant(float(value), self.dtype)
        self._posterior = None

    @property
    def posterior(self) -> Posterior:
        """The Gaussian posterior (:class:`FullPosterior` or :class:`DiagPosterior`)."""
        self._require_fitted()
        if self._posterior is None:
            self._posterior = self._build_posterior(self._prior_precision, self._sigma_noise)
        return self._posterior

    @property
    def curvature(self) -> tf.Tensor:
        """The summed curvature of the unit-noise, untempered negative log-likelihood."""
        self._require_fitted()
        return self._curvature

    # ------------------------------------------------------------------------------------ fit
    def fit(self, data: Any, batch_size: int | None = None, *, verbose: bool = True) -> Laplace:
        """Computes the curvature over ``data`` at the model's current weights.

        Args:
          data: a tuple ``(x, y)`` of arrays, or a batched ``tf.data.Dataset`` of ``(x, y)``.
          batch_size: examples per batch for arrays (default 128).
          verbose: show a progress bar and a one-line summary.

        Returns:
          ``self``, fitted.
        """
        check_weights_finite(self.params.names, [v.value for v in self.params.variables])
        self.mean = self.params.theta
        self.n_outputs = int(self.params.apply(self.mean, self._cast(first_inputs(data))).shape[-1])
        batches = as_batches(data, batch_size, self._validate_targets)
        started = time.perf_counter()
        progress = keras.utils.Progbar(
            None if batches.n_batches is None else batches.n_batches * self._estimator.passes,
            verbose=1 if verbose else 0,
            unit_name="batch",
        )

        def cast_batches() -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
            for x, y in batches.iterate():
                yield self._cast(x), tf.constant(y, self.dtype)
                progress.add(1)

        loss, curvature, n_data = self._estimator.fit(self.mean, cast_batches, stateless_seed(self.seed))
        self._loss, self._curvature, self.n_data = loss, curvature, n_data
        self._posterior, self._eigenvalues = None, None
        if verbose:
            print(
                f"Laplace fitted: {n_data} examples, {self.n_params:,} parameters, "
                f"{self.hessian_structure.value} {self.curvature_type.value}, "
                f"{time.perf_counter() - started:.1f} s"
            )
            for path, treatment in (self._estimator.treatment or {}).items():
                print(f"  {path}: {treatment}")
        return self

    def _validate_targets(self, y: np.ndarray) -> np.ndarray:
        return self.likelihood.validate_targets(y, self.n_outputs)

    # ---------------------------------------------------------------------- evidence and prior
    def log_likelihood(self, sigma_noise: Any = None) -> tf.Tensor:
        """The tempered log-likelihood of the training data at the MAP."""
        self._require_fitted()
        sigma = self._sigma_noise if sigma_noise is None else as_tensor(sigma_noise, self.dtype)
        if self.likelihood.name == LikelihoodName.REGRESSION:
            data_fit = self._loss / (tf.square(sigma) * self.temperature)
            return -data_fit - self.likelihood.log_normalizer(self.n_data, self.n_outputs, sigma)
        return -self._loss / self.temperature

    def log_marginal_likelihood(self, prior_precision: Any = None, sigma_noise: Any = None) -> tf.Tensor:
        """The Laplace approximation of the log evidence, differentiable in both arguments.

        Args:
          prior_precision: use this prior precision instead of ``self.prior_precision``.
          sigma_noise: use this observation noise instead of ``self.sigma_noise`` (regression).
        """
        self._require_fitted()
        prior = self._prior_precision if prior_precision is None else prior_precision
        prior = validate_prior_precision(prior, self.params.sizes, self.dtype)
        sigma = self._sigma_noise if sigma_noise is None else as_tensor(sigma_noise, self.dtype)
        return log_marginal_likelihood(
            self.log_likelihood(sigma),
            self._log_det_posterior_precision(prior, sigma),
            expand_prior_precision(prior, self.params.sizes, self.n_params),
            self.mean,
            self.prior_mean,
        )

    def optimize_prior_precision(
        self,
        method: str = "marglik",
        prior_structure: str = "scalar",
        *,
        optimize_sigma_noise: bool = False,
        max_iterations: int = 200,
        tolerance: float = 1e-6,
    ) -> tf.Tensor:
        """Sets the prior precision (and optionally ``sigma_noise``) to maximise the evidence.

        Maximises :meth:`log_marginal_likelihood` over the log prior precision with L-BFGS,
        which stops when the gradient vanishes (to ``tolerance``), not after a fixed budget.

        Args:
          method: ``"marglik"``.
          prior_structure: ``"scalar"``, ``"layerwise"`` (one per variable) or ``"diag"``.
          optimize_sigma_noise: also tune the observation noise (regression only), jointly.
          max_iterations: the L-BFGS iteration cap; a warning says if it was reached.
          tolerance: the gradient-norm tolerance of the stopping rule.

        Returns:
          The tuned prior precision, also stored in ``self.prior_precision``.
        """
        if method != "marglik":
            raise ValueError(f"method={method!r} is not valid; choose one of 'marglik'.")
        structure = parse_option(PriorStructure, prior_structure, "prior_structure")
        if optimize_sigma_noise and self.likelihood.name != LikelihoodName.REGRESSION:
            raise ValueError("optimize_sigma_noise=True needs likelihood='regression'.")
        self._require_fitted()
        prior, sigma = tune_prior_precision(
            self, structure, optimize_sigma_noise, max_iterations=max_iterations, tolerance=tolerance
        )
        self.prior_precision = prior
        if sigma is not None:
            self.sigma_noise = float(sigma)
        return self.prior_precision

    # ----------------------------------------------------------------------------- predictive
    def sample(self, n_samples: int = 100, seed: int | None = None) -> tf.Tensor:
        """Parameter draws from the posterior, ``(n_samples, n_params)``."""
        return self.posterior.sample(_positive_int(n_samples, "n_samples"), seed)

    def predict(
        self,
        x: Any,
        pred_type: str = "glm",
        link_approx: str = "probit",
        n_samples: int = 100,
        seed: int | None = None,
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        """The posterior predictive at inputs ``x``.

        Args:
          x: inputs, ``(N, ...)``.
          pred_type: ``"glm"`` (linearised network: :math:`f \\sim \\mathcal{N}(f_*(x),
            J \\Sigma J^\\top)`) or ``"nn"`` (the network at ``n_samples`` parameter draws).
          link_approx: for the GLM predictive of classification and binary: ``"probit"`` or
            ``"mc"`` (``n_samples`` draws of the outputs).
          n_samples: draws for ``"nn"`` and ``"mc"``.
          seed: makes the draws reproducible.

        Returns:
          Classification: probabilities ``(N, C)``; binary: ``(N, 1)``; regression:
          ``(f_mean, f_var)``, each ``(N, K)``, the function's mean and variance (no noise).
        """
        pred = parse_option(PredType, pred_type, "pred_type")
        approx = parse_option(LinkApprox, link_approx, "link_approx")
        n_samples = _positive_int(n_samples, "n_samples")
        x = self._inputs(x)
        if pred == PredType.NN:
            outputs = self._sampled_outputs(x, n_samples, seed)
            if self.likelihood.name == LikelihoodName.REGRESSION:
                return tf.reduce_mean(outputs, axis=0), tf.math.reduce_variance(outputs, axis=0)
            return tf.reduce_mean(predictive.link(outputs, self.likelihood.name), axis=0)
        f_mean, f_var = self.glm_output_distribution(x)
        if self.likelihood.name == LikelihoodName.REGRESSION:
            return f_mean, tf.linalg.diag_part(f_var)
        if approx == LinkApprox.PROBIT:
            return predictive.probit(f_mean, f_var, self.likelihood.name)
        return predictive.monte_carlo(f_mean, f_var, self.likelihood.name, n_samples, seed)

    def glm_output_distribution(self, x: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """The linearised network's outputs: means ``(N, K)`` and covariances ``(N, K, K)``.

        When the posterior is over exactly a Dense output layer, this uses the penultimate
        features in closed form (:mod:`laplace_tf.last_layer`) instead of per-example Jacobians.
        """
        x = self._inputs(x)
        if self._features is not None or self._layer_factors is not None:
            batch = PREDICT_BATCH_SIZE
        else:
            batch = max(1, min(PREDICT_BATCH_SIZE, JACOBIAN_ELEMENTS_PER_BATCH // (self.n_outputs * self.n_params)))
        means, covariances = [], []
        for start in range(0, len(x), batch):
            f, covariance = self._glm_batch(self._cast(x[start : start + batch]))
            means.append(f)
            covariances.append(covariance)
        return tf.concat(means, axis=0), tf.concat(covariances, axis=0)

    def _glm_batch(self, inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Outputs and their linearised covariance, by the cheapest exact path available."""
        if self._features is not None:
            f, features = self._features(self.mean, inputs)
            return f, last_layer.functional_variance(self.posterior, features, self.n_outputs)
        if self._layer_factors is not None:
            f, layer_inputs, gradients, leftover = self._layer_factors(self.mean, inputs)
            covariance = kron_predictive.functional_variance(
                self.posterior, self.params, self._dense_rules, layer_inputs, gradients, leftover
            )
            return f, covariance
        f, jacobians = self._jacobians(self.mean, inputs)
        return f, self.posterior.functional_variance(jacobians)

    def predictive_samples(
        self, x: Any, n_samples: int = 100, pred_type: str = "glm", seed: int | None = None
    ) -> tf.Tensor:
        """Draws of the prediction, ``(n_samples, N, K)``: probabilities, or outputs for regression."""
        pred = parse_option(PredType, pred_type, "pred_type")
        n_samples = _positive_int(n_samples, "n_samples")
        x = self._inputs(x)
        if pred == PredType.NN:
            outputs = self._sampled_outputs(x, n_samples, seed)
        else:
            f_mean, f_var = self.glm_output_distribution(x)
            outputs = predictive.gaussian_output_samples(f_mean, f_var, n_samples, seed)
        return predictive.link(outputs, self.likelihood.name)

    def predictive_distribution(self, x: Any, **predict_kwargs: Any) -> tfd.Distribution:
        """The predictive as a TFP distribution over targets; regression adds the noise.

        Classification: ``Categorical`` (batch ``N``); binary: ``Bernoulli`` (batch ``N``);
        regression: ``Independent(Normal(f_mean, sqrt(f_var + sigma^2)))`` with event ``K``.
        """
        prediction = self.predict(x, **predict_kwargs)
        if self.likelihood.name == LikelihoodName.CLASSIFICATION:
            return tfd.Categorical(probs=prediction)
        if self.likelihood.name == LikelihoodName.BINARY:
            return tfd.Bernoulli(probs=prediction[:, 0], dtype=self.dtype)
        f_mean, f_var = prediction
        scale = tf.sqrt(f_var + tf.square(self._sigma_noise))
        return tfd.Independent(tfd.Normal(f_mean, scale), reinterpreted_batch_ndims=1)

    # ------------------------------------------------------------------------------- internals
    def _build_posterior(self, prior_precision: tf.Tensor, sigma_noise: tf.Tensor) -> Posterior:
        prior = expand_prior_precision(prior_precision, self.params.sizes, self.n_params)
        scale = self._curvature_scale(sigma_noise)
        if self.hessian_structure == HessianStructure.KRON:
            return KronPosterior(self.mean, self._kron_eigenblocks(), scale, prior)
        if self.hessian_structure == HessianStructure.LOWRANK:
            return LowRankPosterior(self.mean, self._curvature, scale, prior)
        return build_posterior(self.hessian_structure, self.mean, self._curvature, scale, prior)

    def _kron_eigenblocks(self) -> list:
        """The Kronecker factors' eigendecompositions, computed once per fit."""
        if self._eigenvalues is None:
            with tf.init_scope():
                self._eigenvalues = decompose(self._curvature)
        return self._eigenvalues

    def _log_det_posterior_precision(self, prior_precision: tf.Tensor, sigma_noise: tf.Tensor) -> tf.Tensor:
        if self.hessian_structure == HessianStructure.FULL and prior_precision.shape.rank == 0:
            scale = self._curvature_scale(sigma_noise)
            return log_det_with_scalar_prior(self._curvature_eigenvalues(), scale, prior_precision)
        return self._build_posterior(prior_precision, sigma_noise).log_det_precision

    def _curvature_eigenvalues(self) -> tf.Tensor:
        """The dense curvature's eigenvalues, computed once per fit (eagerly, even from a graph)."""
        if self._eigenvalues is None:
            with tf.init_scope():
                eigenvalues = tf.linalg.eigvalsh(self._curvature)
                if self.curvature_type != CurvatureType.HESSIAN:  # PSD: negatives are round-off
                    eigenvalues = tf.maximum(eigenvalues, 0.0)
                self._eigenvalues = eigenvalues
        return self._eigenvalues

    def _curvature_scale(self, sigma_noise: tf.Tensor) -> tf.Tensor:
        scale = tf.constant(1.0 / self.temperature, self.dtype)
        if self.likelihood.name == LikelihoodName.REGRESSION:
            scale = scale / sigma_noise ** noise_power(self.curvature_type)
        return scale

    def _sampled_outputs(self, x: np.ndarray, n_samples: int, seed: int | None) -> tf.Tensor:
        thetas = self.sample(n_samples, seed)
        chunks = [
            self._outputs_at(thetas, self._cast(x[start : start + PREDICT_BATCH_SIZE]))
            for start in range(0, len(x), PREDICT_BATCH_SIZE)
        ]
        return tf.concat(chunks, axis=1)

    def _inputs(self, x: Any) -> np.ndarray:
        self._require_fitted()
        return as_inputs(x)

    def _cast(self, x: np.ndarray) -> tf.Tensor:
        """Float inputs in the model's dtype; integer inputs (e.g. token ids) as they are."""
        return tf.constant(x, self.dtype) if np.issubdtype(x.dtype, np.floating) else tf.constant(x)

    def _require_fitted(self) -> None:
        if self._curvature is None:
            raise NotFittedError("This Laplace is not fitted yet: call la.fit((x, y)) first.")


def _check_outputs_are_logits(model: keras.Model, likelihood: LikelihoodName) -> None:
    """Refuses a final softmax/sigmoid: the likelihoods expect logits."""
    layers = getattr(model, "layers", None) or []
    activation = getattr(layers[-1], "activation", None) if layers else None
    squashing = {keras.activations.softmax: "softmax", keras.activations.sigmoid: "sigmoid"}
    if likelihood != LikelihoodName.REGRESSION and activation in squashing:
        raise ValueError(
            f"The model's last layer applies {squashing[activation]}, but laplace-tf needs logits: "
            "rebuild the last layer with activation=None (and train with from_logits=True)."
        )


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
