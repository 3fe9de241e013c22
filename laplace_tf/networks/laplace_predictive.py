"""The predictive half of [`Laplace`][laplace_tf.Laplace]: GLM and sampled predictives.

The GLM predictive linearises the network at the MAP, $f(\\theta, x) \\approx f(\\theta_*, x)
+ J(x)(\\theta - \\theta_*)$, so the outputs are Gaussian with covariance $J \\Sigma J^\\top$,
computed by the cheapest exact path available: penultimate features for a last-layer posterior
(`last_layer`), Dense-layer factors for kron and diag (`kron_predictive`, `diag_predictive`),
or per-example Jacobians. The ``nn`` predictive runs the network at posterior draws.

Example:
    ```python
    >>> la.predict(x_test)                                # (N, C) probabilities, probit link
    >>> f_mean, f_var = la_regression.predict(x_test)      # each (N, K)
    ```
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.compiled import cached, separate_tf_function
from laplace_tf.distribution import concatenated_over_replicas, current_strategy
from laplace_tf.networks import diag_predictive, heteroscedastic, kron_predictive, last_layer, predictive
from laplace_tf.networks.curvature import compile_for_batches
from laplace_tf.networks.curvature.output_layer import OutputFeatures, shared_output_features
from laplace_tf.networks.curvature.probed_jacobians import jacobians_function
from laplace_tf.networks.data import UNBATCHED_X, as_inputs
from laplace_tf.networks.dataset_predictions import input_rank, is_dataset, over_batches
from laplace_tf.networks.inputs import n_examples, take
from laplace_tf.networks.layer_factors import LayerFactors, check_one_row_per_example, layer_factors
from laplace_tf.networks.params import ModelParameters
from laplace_tf.networks.posterior import FullPosterior
from laplace_tf.networks.reward import item_signature
from laplace_tf.networks.validation import check_flag, check_seed, positive_int
from laplace_tf.options import HessianStructure, LinkApprox, PredType, parse_option
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.progress import batch_slices
from laplace_tf.seeds import fixed_seed
from laplace_tf.vectorizing import map_examples

tfd = tfp.distributions
PREDICT_BATCH_SIZE = 256
JACOBIAN_ELEMENTS_PER_BATCH = 2**25  # caps a predictive batch's (B, K, P) Jacobians at 128 MiB in float32


class LaplacePredictive:
    """Predictive methods; [`Laplace`][laplace_tf.Laplace] provides the posterior and the model."""

    def _set_up_predictive(self, model: keras.Model) -> None:
        """The predictive views and their compiled functions, shared per model.

        One view predicts on the inputs the Laplace was fitted on; a reward model also has an
        item view (its inputs without the pair axis, its rewards as values; `reward`).
        """
        factored = self.hessian_structure in (HessianStructure.KRON, HessianStructure.DIAG)
        self._fitted_view = predictive_view(model, self.params, self.likelihood.outcome, factored, items=False)
        self._item_view = (
            predictive_view(
                model,
                ModelParameters(model, self.subset_of_weights),
                LikelihoodName.REWARD_MODELING,
                factored,
                items=True,
            )
            if self.likelihood.name == LikelihoodName.REWARD_MODELING
            else None
        )

    def _view_and_inputs(self, x: Any, what: str = "x") -> tuple[PredictiveView, Any]:
        """The view that predicts on ``x`` (a reward model's items or pairs, told by their rank) and
        ``x`` validated against the inputs it takes."""
        view = self._view_for(x)
        expected = item_signature(self._input_signature) if view.items else self._input_signature
        return view, as_inputs(x, expected, what)

    def _view_for(self, x: Any) -> PredictiveView:
        """The view for ``x`` by its rank alone (no validation): items or pairs of a reward model."""
        self._require_fitted()
        if self._item_view is None:
            return self._fitted_view
        fitted_rank = len(tf.nest.flatten(self._input_signature)[0].shape) + 1
        rank = input_rank(x) if is_dataset(x) else np.ndim(tf.nest.flatten(x)[0])
        return self._fitted_view if rank == fitted_rank else self._item_view

    def _over_dataset(self, dataset: tf.data.Dataset, predict: Callable, axis: int = 0, verbose: bool = False) -> Any:
        """``predict`` of each batch's inputs, joined (`dataset_predictions`)."""
        self._check_batched_dataset(dataset)
        return over_batches(dataset, predict, axis, verbose)

    def _check_batched_dataset(self, dataset: tf.data.Dataset) -> None:
        """Refuses a dataset of single examples (inputs one axis short), before reading it."""
        self._require_fitted()
        if self._item_view is not None:  # a reward model's pairs and items differ by one axis too
            return
        if input_rank(dataset) == len(tf.nest.flatten(self._input_signature)[0].shape):
            raise ValueError(UNBATCHED_X)

    def _outputs_per_example(self, view: PredictiveView) -> int:
        return 1 if view.items else self.n_outputs

    def sample(self, n_samples: int = 100, seed: int | None = None) -> tf.Tensor:
        """Parameter draws from the posterior, ``(n_samples, n_params)``."""
        return self.posterior.sample(positive_int(n_samples, "n_samples"), check_seed(seed))

    def predict(
        self,
        x: Any,
        pred_type: str = "glm",
        link_approx: str = "probit",
        n_samples: int = 100,
        seed: int | None = None,
        *,
        diagonal_output: bool = True,
        joint: bool = False,
        verbose: bool = True,
    ) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        """The posterior predictive at inputs ``x``.

        Args:
          x: inputs, ``(N, ...)`` (a reward model: items, or pairs ``(N, 2, ...)``), or a batched
            ``tf.data.Dataset`` of them (or of ``(x, y)``), predicted batch by batch
            (`laplace_tf.networks.dataset_predictions`).
          pred_type: ``"glm"`` (linearised network: $f \\sim \\mathcal{N}(f_*(x),
            J \\Sigma J^\\top)$) or ``"nn"`` (the network at ``n_samples`` parameter draws).
          link_approx: for the GLM predictive of classification and binary: ``"probit"``, ``"mc"``
            (``n_samples`` draws of the outputs), or, for classification, ``"bridge"`` and
            ``"bridge_norm"`` (the Laplace bridge to a Dirichlet).
          n_samples: draws for ``"nn"`` and ``"mc"``.
          seed: makes the draws reproducible.
          diagonal_output: regression: ``False`` returns each example's full output covariance.
          joint: regression: the joint predictive over all ``N`` inputs, mean ``(N*K,)`` and
            covariance ``(N*K, N*K)`` (example-major), including the cross-example covariance.
          verbose: a progress bar over the batches, if predicting takes longer than a few seconds.

        Returns:
          Classification: probabilities ``(N, C)``; binary: ``(N, 1)``; multilabel: each label's
          probability ``(N, K)``; regression:
          ``(f_mean, f_var)``, each ``(N, K)``, the function's mean and variance (no noise); with
          ``diagonal_output=False``, ``f_var`` is ``(N, K, K)``; with ``joint=True`` see above.
          Heteroscedastic: ``(mean, epistemic, aleatoric)``, each ``(N, K)``: the predictive
          mean, the posterior variance of the mean, and the expected noise variance
          (`laplace_tf.networks.heteroscedastic`). Reward modeling: on items ``(N, ...)`` the reward's
          ``(f_mean, f_var)``, each ``(N, 1)``, as regression; on pairs ``(N, 2, ...)`` the
          probabilities ``(N, 2)`` that each item is preferred, as classification (`laplace_tf.networks.reward`).
        """
        pred = parse_option(PredType, pred_type, "pred_type")
        approx = parse_option(LinkApprox, link_approx, "link_approx")
        n_samples = positive_int(n_samples, "n_samples")
        check_seed(seed)
        check_flag(verbose, "verbose")
        if is_dataset(x):
            if joint:
                raise ValueError(
                    "joint=True needs all inputs at once (their cross-covariance); pass arrays, not a dataset."
                )
            options = {"pred_type": pred_type, "link_approx": link_approx, "n_samples": n_samples}
            options.update(seed=fixed_seed(seed), diagonal_output=diagonal_output, verbose=False)
            return self._over_dataset(x, functools.partial(self.predict, **options), verbose=verbose)
        view, x = self._view_and_inputs(x)
        values = view.likelihood in (LikelihoodName.REGRESSION, LikelihoodName.REWARD_MODELING)
        if (joint or not diagonal_output) and not values:
            raise ValueError("joint=True and diagonal_output=False are for regression (and a reward model's items).")
        if view.likelihood == LikelihoodName.HETEROSCEDASTIC:
            if pred == PredType.NN:
                return heteroscedastic.sample_moments(self._sampled_outputs(view, x, n_samples, seed, verbose))
            return heteroscedastic.glm_moments(*self._glm_output_distribution(view, x, verbose))
        if pred == PredType.NN:
            outputs = self._sampled_outputs(view, x, n_samples, seed, verbose)
            if values:
                return _sample_moments(outputs, diagonal_output, joint)
            return tf.reduce_mean(predictive.link(outputs, view.likelihood), axis=0)
        if joint:
            return self._joint_glm_distribution(view, x)
        f_mean, f_var = self._glm_output_distribution(view, x, verbose)
        if values:
            return f_mean, (tf.linalg.diag_part(f_var) if diagonal_output else f_var)
        if approx == LinkApprox.PROBIT:
            return predictive.probit(f_mean, f_var, view.likelihood)
        if approx == LinkApprox.MC:
            return predictive.monte_carlo(f_mean, f_var, view.likelihood, n_samples, seed)
        if view.likelihood != LikelihoodName.CLASSIFICATION:
            raise ValueError(f"link_approx={approx.value!r} is for classification; use 'probit' or 'mc'.")
        return predictive.bridge(f_mean, f_var, normalize=approx == LinkApprox.BRIDGE_NORM)

    def glm_output_distribution(self, x: Any, verbose: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
        """The linearised network's outputs: means ``(N, K)`` and covariances ``(N, K, K)``.

        When the posterior is over exactly a Dense output layer, this uses the penultimate
        features in closed form (`last_layer`) instead of per-example Jacobians. ``x`` may be a
        ``tf.data.Dataset``, as for `predict`.
        """
        if is_dataset(x):
            return self._over_dataset(
                x, functools.partial(self.glm_output_distribution, verbose=False), verbose=verbose
            )
        return self._glm_output_distribution(*self._view_and_inputs(x), verbose)

    def _glm_output_distribution(self, view: PredictiveView, x: Any, verbose: bool) -> tuple[tf.Tensor, tf.Tensor]:
        glm_batch = self._per_example(functools.partial(self._glm_batch, view, examples=n_examples(x)))
        means, covariances = [], []
        for part in batch_slices(n_examples(x), self._batch_size(view, view.jacobian_width), verbose, label="predict"):
            f, covariance = glm_batch(self._cast(take(x, part)))
            means.append(f)
            covariances.append(covariance)
        return tf.concat(means, axis=0), tf.concat(covariances, axis=0)

    def _batch_size(self, view: PredictiveView, jacobian_width: int) -> int:
        """Examples per predictive batch: per-example Jacobians (``jacobian_width`` columns per
        output) are capped in memory."""
        if not jacobian_width:
            return PREDICT_BATCH_SIZE
        per_example = self._outputs_per_example(view) * jacobian_width
        return max(1, min(PREDICT_BATCH_SIZE, JACOBIAN_ELEMENTS_PER_BATCH // per_example))

    def _joint_glm_distribution(self, view: PredictiveView, x: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean ``(N*K,)`` and covariance ``(N*K, N*K)`` of all outputs at once: $J \\Sigma J^\\top$
        with the Jacobians of all examples stacked (memory $N K P$)."""
        outputs, jacobians = view.jacobians(self.mean, self._cast(x))
        stacked = tf.reshape(jacobians, [1, -1, self.n_params])
        return tf.reshape(outputs, [-1]), self.posterior.functional_variance(stacked)[0]

    def _glm_batch(self, view: PredictiveView, inputs: tf.Tensor, examples: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Outputs and their linearised covariance, by the cheapest exact path available (``examples``:
        how many the call predicts, of which ``inputs`` is a batch)."""
        if view.features is not None and view.features.direct is not False:  # unknown until traced
            f, features = view.features(self.mean, inputs)
            if view.features.direct:
                outputs = self._outputs_per_example(view)
                return f, last_layer.functional_variance(self.posterior, features, outputs, examples)
        if view.layer_factors is not None:
            f, layer_inputs, gradients, leftover = view.layer_factors(self.mean, inputs)
            check_one_row_per_example(view.layer_factors.factored, layer_inputs, f)
            variance_from_factors = (
                diag_predictive.functional_variance
                if self.hessian_structure == HessianStructure.DIAG
                else kron_predictive.functional_variance
            )
            covariance = variance_from_factors(
                self.posterior, view.params, view.layer_factors.factored, layer_inputs, gradients, leftover
            )
            return f, covariance
        f, jacobians = view.jacobians(self.mean, inputs)
        if isinstance(self.posterior, FullPosterior):  # the call's rows decide whether its factor pays
            return f, self.posterior.functional_variance(jacobians, rows=examples * int(jacobians.shape[1]))
        return f, self.posterior.functional_variance(jacobians)

    def predictive_samples(
        self, x: Any, n_samples: int = 100, pred_type: str = "glm", seed: int | None = None, verbose: bool = True
    ) -> tf.Tensor:
        """Draws of the prediction, ``(n_samples, N, K)``: probabilities, or outputs for regression
        (and a reward model's items). ``x`` may be a ``tf.data.Dataset``, as for `predict`."""
        pred = parse_option(PredType, pred_type, "pred_type")
        n_samples = positive_int(n_samples, "n_samples")
        check_seed(seed)
        check_flag(verbose, "verbose")
        if is_dataset(x):
            options = {"n_samples": n_samples, "pred_type": pred_type, "seed": fixed_seed(seed), "verbose": False}
            return self._over_dataset(x, functools.partial(self.predictive_samples, **options), 1, verbose)
        view, x = self._view_and_inputs(x)
        if pred == PredType.NN:
            outputs = self._sampled_outputs(view, x, n_samples, seed, verbose)
        else:
            f_mean, f_var = self._glm_output_distribution(view, x, verbose)
            outputs = predictive.gaussian_output_samples(f_mean, f_var, n_samples, seed)
        return predictive.link(outputs, view.likelihood)

    def predictive_distribution(self, x: Any, **predict_kwargs: Any) -> tfd.Distribution:
        """The predictive as a TFP distribution over targets; regression adds the noise.

        Classification (and a reward model's pairs): ``Categorical`` (batch ``N``); binary:
        ``Bernoulli`` (batch ``N``); multilabel: ``Independent(Bernoulli)`` with event ``K``;
        heteroscedastic: ``Independent(Normal(mean, sqrt(epistemic + aleatoric)))`` with event ``K``;
        regression: ``Independent(Normal(f_mean, sqrt(f_var + sigma^2)))`` with event ``K``; a reward
        model's items: ``Independent(Normal(f_mean, sqrt(f_var)))``, the latent reward.
        """
        view = self._view_for(x)  # predict validates x
        prediction = self.predict(x, **predict_kwargs)
        if view.likelihood == LikelihoodName.CLASSIFICATION:
            return tfd.Categorical(probs=prediction)
        if view.likelihood == LikelihoodName.BINARY:
            return tfd.Bernoulli(probs=prediction[:, 0], dtype=self.dtype)
        if view.likelihood == LikelihoodName.MULTILABEL:
            return tfd.Independent(tfd.Bernoulli(probs=prediction, dtype=self.dtype), reinterpreted_batch_ndims=1)
        if view.likelihood == LikelihoodName.HETEROSCEDASTIC:
            mean, epistemic, aleatoric = prediction
            return tfd.Independent(tfd.Normal(mean, tf.sqrt(epistemic + aleatoric)), reinterpreted_batch_ndims=1)
        f_mean, f_var = prediction
        if view.likelihood == LikelihoodName.REGRESSION:  # a reward model's items: the latent reward, no noise
            f_var = f_var + tf.square(self._sigma_noise)
        return tfd.Independent(tfd.Normal(f_mean, tf.sqrt(f_var)), reinterpreted_batch_ndims=1)

    def _sampled_outputs(
        self, view: PredictiveView, x: Any, n_samples: int, seed: int | None, verbose: bool
    ) -> tf.Tensor:
        return self._outputs_at_draws(view, self.sample(n_samples, seed), x, False, verbose)

    def outputs_at_draws(self, thetas: tf.Tensor, x: Any, pred_type: str = "nn", verbose: bool = True) -> tf.Tensor:
        """The network's outputs ``(S, N, K)`` at parameter draws ``thetas`` ``(S, P)``.

        ``pred_type="nn"`` runs the network at each draw; ``"glm"`` gives the linearised network
        $f(\\theta_*, x) + J(x)(\\theta_s - \\theta_*)$, the model behind the GLM predictive.
        """
        linearised = parse_option(PredType, pred_type, "pred_type") == PredType.GLM
        if is_dataset(x):
            draws = self._checked_draws(thetas)
            outputs = functools.partial(self.outputs_at_draws, draws, pred_type=pred_type, verbose=False)
            return self._over_dataset(x, outputs, 1, verbose)
        view, x = self._view_and_inputs(x)
        return self._outputs_at_draws(view, self._checked_draws(thetas), x, linearised, verbose)

    def _outputs_at_draws(
        self, view: PredictiveView, thetas: tf.Tensor, x: Any, linearised: bool, verbose: bool
    ) -> tf.Tensor:
        outputs = self._per_example(
            functools.partial(self._linearised_outputs if linearised else self._network_outputs, view)
        )
        batch_size = self._batch_size(view, self.n_params if linearised else 0)
        chunks = [
            outputs(self._cast(take(x, part)), thetas)
            for part in batch_slices(n_examples(x), batch_size, verbose, label="predict")
        ]
        return tf.transpose(tf.concat(chunks, axis=0), [1, 0, 2])

    def _checked_draws(self, thetas: Any) -> tf.Tensor:
        """Parameter draws ``(S, P)`` as a tensor, checked for shape and finiteness."""
        values = np.asarray(thetas)
        if values.ndim != 2 or values.shape[1] != self.n_params or values.shape[0] == 0:
            raise ValueError(f"thetas must have shape (S, {self.n_params}) with S >= 1, got {values.shape}.")
        if not np.all(np.isfinite(values)):
            raise ValueError("thetas contains NaN or inf; pass finite parameter draws (e.g. from la.sample).")
        return tf.convert_to_tensor(values, self.dtype)

    def _network_outputs(self, view: PredictiveView, inputs: tf.Tensor, thetas: tf.Tensor) -> tf.Tensor:
        """The network at each draw, examples first: ``(B, S, K)``."""
        by_features = self._outputs_from_features(view, inputs, thetas)
        if by_features is not None:
            return by_features
        return tf.transpose(view.outputs_at(thetas, inputs), [1, 0, 2])

    def _linearised_outputs(self, view: PredictiveView, inputs: tf.Tensor, thetas: tf.Tensor) -> tf.Tensor:
        """The linearised network at each draw, examples first: ``(B, S, K)``."""
        by_features = self._outputs_from_features(view, inputs, thetas)
        if by_features is not None:
            return by_features
        f, jacobians = view.jacobians(self.mean, inputs)
        return f[:, None] + tf.einsum("bkp,sp->bsk", jacobians, thetas - self.mean)

    def _outputs_from_features(self, view: PredictiveView, inputs: tf.Tensor, thetas: tf.Tensor) -> tf.Tensor | None:
        r"""For a Dense output layer whose outputs are the model's, $f_s = a W_s$ ``(B, S, K)`` from
        its features $a$ (a 1 for the bias) and each draw's weights ``(d+1, K)``: the network is
        linear in them, so its outputs and the linearised ones are the same, and one pass of the
        network serves every draw. ``None`` for any other model."""
        if view.features is None or view.features.direct is False:
            return None
        _, features = view.features(self.mean, inputs)
        if not view.features.direct:
            return None
        weights = tf.reshape(thetas, [tf.shape(thetas)[0], features.shape[-1], -1])
        return tf.einsum("bi,sik->bsk", features, weights)

    def _per_example(self, fn: Any) -> Any:
        """``fn(inputs, ...)``, or under a ``tf.distribute`` strategy its replicas' shards gathered."""
        strategy = current_strategy(self.strategy)
        return fn if strategy is None else concatenated_over_replicas(strategy, fn, sharded=(0,))

    def map_outputs(self, x: Any) -> tf.Tensor:
        """The network's outputs ``(N, K)`` at the MAP, in batches."""
        return self.outputs_at_draws(self.mean[None], x, verbose=False)[0]


@dataclass(frozen=True)
class PredictiveView:
    """What predictions on one kind of input use: the parameters that apply the model to them, the
    likelihood that turns outputs into predictions, and the compiled functions (shared per model)."""

    params: ModelParameters
    likelihood: LikelihoodName
    items: bool  # a reward model's items: the fitted pairs' signature without the pair axis
    jacobians: Callable
    outputs_at: Callable
    features: OutputFeatures | None  # closed-form last-layer path (`last_layer`), if the outputs are direct
    layer_factors: LayerFactors | None  # closed-form kron and diag path (`kron_predictive`, `diag_predictive`)

    @property
    def closed_form(self) -> bool:
        """Whether the GLM predictive avoids some per-example Jacobians."""
        return self.features is not None or self.layer_factors is not None

    @property
    def jacobian_width(self) -> int:
        """The GLM predictive's per-example Jacobian columns per output."""
        if self.features is not None and self.features.direct is not False:
            return 0
        return self.params.n_params if self.layer_factors is None else self.layer_factors.jacobian_width


def predictive_view(
    model: keras.Model, params: ModelParameters, likelihood: LikelihoodName, factored: bool, *, items: bool
) -> PredictiveView:
    """The view's compiled functions, built once per model and parameter selection."""
    apply, vectorize, key = params.apply, params.vectorize, params.cache_key()  # no `self` in cached closures
    features = shared_output_features(params)
    factors = None if not factored else cached(model, ("factors", key), lambda: layer_factors(params))
    return PredictiveView(
        params=params,
        likelihood=likelihood,
        items=items,
        jacobians=cached(
            model, ("jacobians", key), lambda: compile_for_batches(jacobians_function(params), params.model)
        ),
        outputs_at=cached(
            model,
            ("outputs", key),
            lambda: separate_tf_function(functools.partial(_outputs_at, apply, vectorize), reduce_retracing=True),
        ),
        features=features,
        layer_factors=factors,
    )


def _outputs_at(apply: Callable, vectorize: bool, thetas: tf.Tensor, x: Any) -> tf.Tensor:
    """The network at each draw ``(S, B, K)``. Vectorised, the first draw is repeated once more
    and its copy dropped: with a traced number of draws, ``pfor`` squeezes a loop of one draw out
    of a ``tf.squeeze`` without axes, which Keras applies to a convolution's bias (one draw, the
    MAP, after calls with others, failed on a shape mismatch)."""
    if not vectorize:
        return map_examples(lambda theta: apply(theta, x), thetas, vectorize)
    padded = tf.concat([thetas, thetas[:1]], axis=0)
    return map_examples(lambda theta: apply(theta, x), padded, vectorize)[:-1]


def _sample_moments(outputs: tf.Tensor, diagonal_output: bool, joint: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and (co)variance of sampled outputs ``(S, N, K)``, shaped as
    [`Laplace.predict`][laplace_tf.Laplace.predict] returns."""
    if joint:
        flat = tf.reshape(outputs, [tf.shape(outputs)[0], -1])
        return tf.reduce_mean(flat, axis=0), tfp.stats.covariance(flat, sample_axis=0, event_axis=-1)
    if diagonal_output:
        return tf.reduce_mean(outputs, axis=0), tf.math.reduce_variance(outputs, axis=0)
    return tf.reduce_mean(outputs, axis=0), tfp.stats.covariance(outputs, sample_axis=0, event_axis=-1)
