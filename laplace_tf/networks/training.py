r"""Training with the marginal likelihood: weights and prior (and noise) learned together.

Algorithm 1 of Immer et al. 2021, "Scalable marginal likelihood estimation for model selection
in deep learning". The network's weights $\theta$ follow the negative log joint per example,

$$
\frac{1}{N}\Big(\sum_{n=1}^{N} \ell(f(\theta, x_n), y_n) + \tfrac12 \theta^\top \operatorname{diag}(\lambda)\,
\theta\Big), \qquad \ell = \text{the likelihood's negative log density (regression: }
\tfrac{1}{2\sigma^2}\lVert y - f \rVert^2),
$$

by the optimiser, a mini-batch at a time (the prior's share enters every step as a Keras weight
regulariser). Every ``marglik_frequency`` epochs from epoch ``burnin`` on, a Laplace approximation
is fitted at the current weights and ``hyper_steps`` Adam steps are taken on
$-\log Z(\lambda, \sigma) / N$ in $\eta = (\log \lambda, \log \sigma)$: the prior precision
(scalar, one per variable, or one per weight) and, for regression, the noise. The weights of the
best evidence are kept, with their Laplace approximation.

The prior's mean is zero; the user's own weight decay (regularisers, the optimiser's
``weight_decay``) must be off, since the learned prior replaces it.

Example:
    ```python
    >>> result = lt.marglik_training(model, (x, y), "regression", epochs=300, learning_rate=1e-2)
    >>> result.laplace.sigma_noise, result.history["log_marginal_likelihood"][-1]
    >>> callback = lt.MarglikCallback((x, y), "classification")   # the same inside model.fit
    >>> model.compile(optimizer="adam", loss=callback.loss)
    >>> model.fit(x, y, epochs=50, callbacks=[callback])
    >>> callback.laplace.predict(x_test)
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.compiled import separate_tf_function
from laplace_tf.networks.data import DEFAULT_BATCH_SIZE, as_batches, first_inputs
from laplace_tf.networks.likelihood_loss import LikelihoodLoss
from laplace_tf.networks.likelihoods import get_likelihood
from laplace_tf.networks.params import ModelParameters
from laplace_tf.networks.validation import check_flag, positive_int, positive_number
from laplace_tf.options import HessianStructure, PriorStructure, parse_option
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.progress import Progress

HISTORY_KEYS = ("loss", "log_marginal_likelihood", "prior_precision", "sigma_noise")


class MarglikCallback(keras.callbacks.Callback):
    """Learns the prior precision (and noise) by the evidence while ``model.fit`` learns the weights.

    Compile the model with this callback's `loss` and no weight decay, then pass the callback
    to ``model.fit``. After training the model holds the weights of the best evidence, `laplace`
    is their fitted Laplace approximation (prior and noise tuned), and `history` has one entry per
    epoch; the evidence also appears in Keras's logs as ``log_marginal_likelihood`` (NaN on
    epochs without a Laplace fit).

    Args:
      data: the training data, for the Laplace fits: ``(x, y)`` arrays or a batched
        ``tf.data.Dataset`` (the same data ``model.fit`` trains on).
      likelihood: ``"classification"``, ``"regression"``, ``"binary"``, ``"multilabel"`` or
        ``"heteroscedastic"``.
      hessian_structure: of the Laplace fits: ``"kron"``, ``"diag"``, ``"full"`` or ``"lowrank"``.
      prior_structure: ``"scalar"``, ``"layerwise"`` (one per trainable variable) or ``"diag"``
        (one per weight; not with kron).
      burnin: epochs before the first Laplace fit.
      hyper_steps: Adam steps on the hyperparameters after each fit.
      marglik_frequency: fit every this many epochs.
      hyper_learning_rate: the hyperparameters' Adam learning rate.
      prior_precision: the starting prior precision (scalar).
      sigma_noise: the starting noise (regression).
      batch_size: examples per batch of the Laplace fits, for arrays.
      verbose: a progress bar over epochs with the evidence.
      laplace_options: passed on to [`Laplace`][laplace_tf.Laplace] (e.g. ``curvature``,
        ``temperature``, ``memory_limit``; ``subset_of_weights`` is ``"all"`` unless given: the
        evidence of the whole network).
    """

    def __init__(
        self,
        data: Any,
        likelihood: str,
        *,
        hessian_structure: str = "kron",
        prior_structure: str = "layerwise",
        burnin: int = 0,
        hyper_steps: int = 10,
        marglik_frequency: int = 1,
        hyper_learning_rate: float = 0.1,
        prior_precision: float = 1.0,
        sigma_noise: float = 1.0,
        batch_size: int | None = None,
        verbose: bool = True,
        **laplace_options: Any,
    ):
        super().__init__()
        self.likelihood = get_likelihood(likelihood)
        if self.likelihood.name == LikelihoodName.REWARD_MODELING:
            raise ValueError(
                "marglik training does not take likelihood='reward_modeling' yet; train the reward model, "
                "then fit lt.Laplace(model, 'reward_modeling') and call optimize_prior_precision()."
            )
        self.hessian_structure = parse_option(HessianStructure, hessian_structure, "hessian_structure")
        self.prior_structure = parse_option(PriorStructure, prior_structure, "prior_structure")
        if self.hessian_structure == HessianStructure.KRON and self.prior_structure == PriorStructure.DIAG:
            raise ValueError("hessian_structure='kron' takes prior_structure='scalar' or 'layerwise', not 'diag'.")
        self.burnin = _non_negative_int(burnin, "burnin")
        self.hyper_steps = positive_int(hyper_steps, "hyper_steps")
        self.marglik_frequency = positive_int(marglik_frequency, "marglik_frequency")
        self.hyper_learning_rate = positive_number(hyper_learning_rate, "hyper_learning_rate")
        self.initial_prior = positive_number(prior_precision, "prior_precision")
        self.initial_sigma = positive_number(sigma_noise, "sigma_noise")
        self.learns_noise = self.likelihood.name == LikelihoodName.REGRESSION
        if not self.learns_noise and sigma_noise != 1.0:
            raise ValueError("sigma_noise applies to likelihood='regression' only; leave it at 1.0.")
        check_flag(verbose, "verbose")
        self.data, self.batch_size, self.verbose = data, batch_size, verbose
        self.laplace_options = _checked_laplace_options(laplace_options)
        self.laplace: Any = None
        self.history: dict[str, list] = {"epoch": [], **{key: [] for key in HISTORY_KEYS}}
        self._state: _TrainingState | None = None
        self.loss = LikelihoodLoss(self.likelihood.name.value, self.initial_sigma)
        """The loss to compile the model with (`LikelihoodLoss`; for regression at the learned noise)."""

    # ----------------------------------------------------------------------- Keras's hooks
    def on_train_begin(self, logs: dict | None = None) -> None:
        model = self.model
        _check_compiled_for_marglik(model, self.loss)
        params = ModelParameters(model)
        n_data = self._checked_data_size(model)
        self._state = _TrainingState(
            params=params,
            n_data=n_data,
            precision=tf.Variable(
                _per_weight(self.initial_prior, params.sizes).astype(params.dtype.name), trainable=False
            ),
            prior=self.initial_prior,
        )
        self.loss.sigma_noise.assign(self.initial_sigma)
        _attach_prior(params, self._state.precision, n_data)
        model.make_train_function(force=True)  # a train step traced before would lack the prior
        self._state.progress = Progress(self.params.get("epochs"), self.verbose, unit="epoch", label="marglik training")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        number = epoch + 1
        evidence = float("nan")
        if number >= self.burnin and number % self.marglik_frequency == 0:
            evidence = self._fit_and_tune()
        logs["log_marginal_likelihood"] = evidence
        self._record(number, logs.get("loss", float("nan")), evidence)
        values = [("loss", logs.get("loss", float("nan")))]
        if self._state.best_evidence > -np.inf:
            values.append(("best log evidence", self._state.best_evidence))
        self._state.progress.add(1, values=values)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._state.progress.close()
        if self._state.best_weights is None:  # training ended before any Laplace fit
            self._fit_and_tune()
        self.model.set_weights(self._state.best_weights)
        self.laplace = self._state.best_laplace
        _detach_prior(self._state.params)

    # ------------------------------------------------------------------------------ internals
    def _fit_and_tune(self) -> float:
        """A Laplace at the current weights, ``hyper_steps`` Adam steps on the evidence; its value."""
        from laplace_tf.networks.laplace import Laplace
        from laplace_tf.networks.tuning import evidence_objective

        state = self._state
        options = {"subset_of_weights": "all", **self.laplace_options}  # the evidence of the whole network
        if self.model.distribute_strategy.num_replicas_in_sync > 1:  # fit where the model trains
            options.setdefault("strategy", self.model.distribute_strategy)
        la = Laplace(
            self.model,
            self.likelihood.name,
            hessian_structure=self.hessian_structure,
            prior_precision=state.prior,
            sigma_noise=float(self.loss.sigma_noise.numpy()) if self.learns_noise else 1.0,
            **options,
        )
        la.fit(self.data, self.batch_size, verbose=False)
        objective = evidence_objective(la, self.prior_structure, self.learns_noise)
        if state.hyper_step is None:
            state.hyper_step = _compiled_adam_step(objective.start, self.hyper_learning_rate)
        for _ in range(self.hyper_steps):
            _, gradient = objective.value_and_gradient(state.hyper_step.eta.numpy())
            state.hyper_step(tf.constant(gradient))
        eta = state.hyper_step.eta.numpy()
        prior, sigma = objective.unpack(eta)
        la.prior_precision = prior
        if sigma is not None:
            la.sigma_noise = float(sigma)
            self.loss.sigma_noise.assign(float(sigma))
        state.prior = prior
        state.precision.assign(_per_weight(prior, state.params.sizes).astype(state.precision.dtype.name))
        evidence = -float(objective.value_and_gradient(eta)[0]) * la.n_data  # the objective is -evidence / N
        if evidence > state.best_evidence:
            state.best_evidence, state.best_laplace = evidence, la
            state.best_weights = [np.array(w) for w in self.model.get_weights()]
        return evidence

    def _record(self, epoch: int, loss: float, evidence: float) -> None:
        self.history["epoch"].append(epoch)
        self.history["loss"].append(float(loss))
        self.history["log_marginal_likelihood"].append(evidence)
        self.history["prior_precision"].append(np.array(self._state.prior, dtype=np.float64))
        self.history["sigma_noise"].append(float(self.loss.sigma_noise.numpy()))

    def _checked_data_size(self, model: keras.Model) -> int:
        """Validates the fits' data before any training and counts its examples."""
        first = first_inputs(self.data, 2)
        outputs = np.asarray(model(first, training=False))
        n_outputs = 1 if outputs.ndim == 1 else outputs.shape[-1]
        batches = as_batches(self.data, self.batch_size, lambda y: self.likelihood.validate_targets(y, n_outputs))
        return sum(len(y) for _, y in batches.iterate())


@dataclass
class _TrainingState:
    """What the callback keeps during one ``model.fit``."""

    params: ModelParameters
    n_data: int
    precision: tf.Variable  # per weight, read by the regularisers
    prior: Any  # as tuned: a scalar, or one value per variable or per weight
    hyper_step: Any = None  # Adam on (log prior, log noise), compiled
    best_evidence: float = -np.inf
    best_laplace: Any = None
    best_weights: list | None = None
    progress: Any = field(default=None, repr=False)


@dataclass
class MarglikResult:
    """What [`marglik_training`][laplace_tf.marglik_training] returns.

    Attributes:
      laplace: the Laplace approximation at the best weights, with the learned prior (and noise).
      model: the trained model (the same object), holding the best weights.
      history: per epoch: ``epoch``, ``loss``, ``log_marginal_likelihood`` (NaN without a fit),
        ``prior_precision`` and ``sigma_noise``.
    """

    laplace: Any
    model: keras.Model
    history: dict[str, list]


def marglik_training(
    model: keras.Model,
    data: Any,
    likelihood: str,
    *,
    hessian_structure: str = "kron",
    prior_structure: str = "layerwise",
    epochs: int = 100,
    learning_rate: float = 1e-3,
    optimizer: keras.optimizers.Optimizer | None = None,
    burnin: int = 0,
    hyper_steps: int = 10,
    marglik_frequency: int = 1,
    hyper_learning_rate: float = 0.1,
    batch_size: int | None = None,
    prior_precision: float = 1.0,
    sigma_noise: float = 1.0,
    verbose: bool = True,
    **laplace_options: Any,
) -> MarglikResult:
    """Trains ``model`` on ``data`` with the prior precision (and noise) learned by the evidence.

    Compiles the model with the likelihood's loss and ``optimizer`` (default Adam with
    ``learning_rate``), trains it for ``epochs`` with a [`MarglikCallback`][laplace_tf.MarglikCallback]
    (see there for the other arguments), and returns the best weights' Laplace.

    Args:
      model: a built Keras model without weight regularisers; trained in place.
      data: ``(x, y)`` arrays (shuffled each epoch, ``batch_size`` per step, default 128) or a
        batched ``tf.data.Dataset``.
      likelihood: as for [`Laplace`][laplace_tf.Laplace] (not reward modeling).
      epochs: passes over the data.
      learning_rate: of the default Adam optimiser.
      optimizer: a Keras optimiser (without ``weight_decay``) instead.
      verbose: a progress bar over epochs.

    Returns:
      A `MarglikResult`: ``laplace``, ``model`` and ``history``.
    """
    positive_int(epochs, "epochs")
    callback = MarglikCallback(
        data,
        likelihood,
        hessian_structure=hessian_structure,
        prior_structure=prior_structure,
        burnin=burnin,
        hyper_steps=hyper_steps,
        marglik_frequency=marglik_frequency,
        hyper_learning_rate=hyper_learning_rate,
        prior_precision=prior_precision,
        sigma_noise=sigma_noise,
        batch_size=batch_size,
        verbose=verbose,
        **laplace_options,
    )
    optimizer = optimizer or keras.optimizers.Adam(positive_number(learning_rate, "learning_rate"))
    if isinstance(data, tf.data.Dataset):
        model.compile(optimizer=optimizer, loss=callback.loss)
        model.fit(data, epochs=epochs, callbacks=[callback], shuffle=False, verbose=0)
    else:
        batches, steps = _shuffled_batches(data, batch_size or DEFAULT_BATCH_SIZE)
        # a whole epoch per compiled call: Keras's per-call overhead dominates small data sets
        model.compile(optimizer=optimizer, loss=callback.loss, steps_per_execution=steps)
        model.fit(batches, epochs=epochs, steps_per_epoch=steps, callbacks=[callback], shuffle=False, verbose=0)
    return MarglikResult(laplace=callback.laplace, model=model, history=callback.history)


def _shuffled_batches(data: tuple, batch_size: int) -> tuple[tf.data.Dataset, int]:
    """Arrays as one endless, reshuffled stream of batches and the steps of one pass: Keras then
    keeps one iterator for all epochs instead of building one per epoch."""
    x, y = data
    n = len(np.asarray(y))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=0, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE), -(-n // batch_size)


def _check_compiled_for_marglik(model: keras.Model, loss: Any) -> None:
    """The model must be compiled with the callback's loss, without weight decay of its own."""
    if getattr(model, "loss", None) is not loss:
        raise ValueError(
            "MarglikCallback needs the model compiled with its loss: model.compile(optimizer=..., "
            "loss=callback.loss). The learned noise and prior only make sense with that likelihood."
        )
    decayed = [v.path for v in model.trainable_variables if getattr(v, "regularizer", None) is not None]
    if decayed:
        raise ValueError(
            f"The model has weight regularisers on {decayed[:3]}{' ...' if len(decayed) > 3 else ''}; marglik "
            "training learns the prior (the weight decay) itself: build the model without kernel_regularizer."
        )
    if getattr(model.optimizer, "weight_decay", None):
        raise ValueError(
            "The optimizer has weight_decay set; marglik training learns the prior (the weight decay) "
            "itself: use an optimizer without weight_decay (e.g. keras.optimizers.Adam, not AdamW)."
        )


@dataclass
class _HyperStep:
    """Keras Adam on the hyperparameters ``eta``, one step per call, compiled once (the vector is a
    handful of numbers, so an eager step would be all overhead)."""

    eta: keras.Variable
    step: Callable[[tf.Tensor], Any]

    def __call__(self, gradient: tf.Tensor) -> None:
        self.step(gradient)


def _compiled_adam_step(start: np.ndarray, learning_rate: float) -> _HyperStep:
    eta = keras.Variable(start, dtype="float64", trainable=False, name="marglik_log_hypers")
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build([eta])
    return _HyperStep(eta, separate_tf_function(lambda gradient: optimizer.apply([gradient], [eta])))


def _per_weight(prior: Any, sizes: list[int]) -> np.ndarray:
    """A scalar, per-variable or per-weight prior precision as one value per weight."""
    values = np.atleast_1d(np.asarray(prior, np.float64))
    return np.repeat(values, sizes) if len(values) == len(sizes) else np.broadcast_to(values, [sum(sizes)])


def _attach_prior(params: ModelParameters, precision: tf.Variable, n_data: int) -> None:
    """Each trainable variable's share of the prior, $\\tfrac12 \\sum \\lambda_i \\theta_i^2 / N$,
    as its Keras regulariser (added to every training step's loss)."""
    offsets = np.concatenate([[0], np.cumsum(params.sizes)])
    for variable, start, end in zip(params.variables, offsets[:-1], offsets[1:], strict=True):
        variable.regularizer = _PriorShare(precision, int(start), int(end), n_data)


class _PriorShare(keras.regularizers.Regularizer):
    """One variable's share of the prior, weights ``start`` to ``end`` of the flat vector:
    $\\tfrac12 \\sum_i \\lambda_i \\theta_i^2 / N$, in floatx, as Keras sums the losses. A
    `keras.regularizers.Regularizer`: Keras 3.12 (the last for Python 3.10) takes no other callable."""

    def __init__(self, precision: tf.Variable, start: int, end: int, n_data: int):
        self.precision, self.start, self.end, self.n_data = precision, start, end, n_data

    def __call__(self, value: Any) -> tf.Tensor:
        weights = tf.reshape(tf.cast(tf.convert_to_tensor(value), self.precision.dtype), [-1])
        penalty = 0.5 * tf.reduce_sum(self.precision[self.start : self.end] * tf.square(weights)) / self.n_data
        return tf.cast(penalty, keras.config.floatx())


def _detach_prior(params: ModelParameters) -> None:
    for variable in params.variables:
        variable.regularizer = None


def _checked_laplace_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if `Laplace` takes them all (besides those marglik training sets itself), refused
    before any training otherwise, with the closest names (laplace-torch's ``n_epochs`` is Keras's
    ``epochs`` here)."""
    import difflib
    import inspect

    from laplace_tf.networks.laplace import Laplace

    set_here = {"self", "model", "likelihood", "hessian_structure", "prior_precision", "sigma_noise"}
    taken = set(inspect.signature(Laplace.__init__).parameters) - set_here
    own = set(inspect.signature(marglik_training).parameters) - {"model", "data", "likelihood", "laplace_options"}
    for name in options:
        if name not in taken:
            close = difflib.get_close_matches(name.removeprefix("n_"), sorted(taken | own), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
            raise TypeError(
                f"marglik training got an unknown option {name!r}: it takes its own arguments and the "
                f"Laplace options {sorted(taken)}{hint}"
            )
    return options


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(value)
