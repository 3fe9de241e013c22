r"""Laplace approximations of probabilistic models: TFP joint distributions and any log density.

For a log density $\log p(c)$ over constrained parameters $c = b(u)$ (``b`` a bijector
from unconstrained $u \in \mathbb{R}^D$), the objective in unconstrained space is

$$
\ell(u) = \log p(b(u)) + [\text{jacobian}] \, \log\lvert\det \partial b(u)/\partial u\rvert.
$$


Its mode $\hat u$ (by L-BFGS or BFGS) and the exact Hessian there (nested gradient tapes,
[`hessian`][laplace_tf.hessian]) give $u \sim \mathcal{N}(\hat u, (-\nabla^2 \ell(\hat u))^{-1})$;
draws are mapped back through $b$. With ``jacobian=True`` (Stan's default) $\ell$ is the
log density of $u$, so the Gaussian approximates the posterior of $u$; with
``jacobian=False`` (pymc-extras' behaviour) $b(\hat u)$ is the constrained-space MAP.

Example:
    ```python
    >>> model = tfd.JointDistributionNamed(dict(
    ...     sigma=tfd.HalfNormal(1.0),
    ...     y=lambda sigma: tfd.Sample(tfd.Normal(0.0, sigma), 20)))
    >>> result = lt.fit_laplace(model, observed={"y": y}, num_draws=1000, seed=0)
    >>> result.draws["sigma"].shape, az.summary(result.to_inference_data())
    ```
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.hessians import hessian
from laplace_tf.models.flat_state import FlatState
from laplace_tf.models.laplace_result import LaplaceResult
from laplace_tf.models.mode_finding import find_mode
from laplace_tf.networks.posterior import FullPosterior, NotPositiveDefiniteError
from laplace_tf.seeds import stateless_seed

tfb = tfp.bijectors
tfd = tfp.distributions
MODE_SLACK = 1e-4  # posterior standard deviations between the mean and the mode that count as converged
INITIAL_POINT_RANGE = 2.0  # extra starting points uniform in (-2, 2) per unconstrained coordinate, as Stan


def fit_laplace(
    model: tfd.JointDistribution,
    observed: Mapping[str, Any],
    *,
    jacobian: bool = True,
    num_draws: int = 1000,
    num_chains: int = 4,
    seed: int | None = None,
    optimizer: str = "lbfgs",
    initial_state: Any = None,
    num_initial_points: int = 1,
    max_iterations: int = 1000,
    tolerance: float = 1e-8,
) -> LaplaceResult:
    """The Laplace approximation of a TFP joint distribution's posterior given ``observed`` values.

    Args:
      model: a ``tfd.JointDistributionNamed``, ``Sequential`` or ``Coroutine`` (auto-batched or not).
      observed: the observed variables' values by name; the others are the free parameters.
      jacobian: include the log-det-Jacobian of the unconstrained transform (see the module docs).
      num_draws: draws from the Gaussian in all, split into ``num_chains`` chains for ArviZ.
      num_chains: chains of the draws (must divide ``num_draws``).
      seed: makes the draws (and extra starting points) reproducible.
      optimizer: ``"lbfgs"`` or ``"bfgs"``.
      initial_state: the free variables' starting values (constrained, as the model samples
        them); default: the constrained image of 0 in unconstrained space.
      num_initial_points: more than 1 adds starts uniform in (-2, 2) in unconstrained space
        (Stan's default initialisation); the best mode found wins.
      max_iterations, tolerance: the optimiser's budget and gradient tolerance.

    Returns:
      A `LaplaceResult`.
    """
    if not isinstance(model, tfd.JointDistribution):
        raise TypeError(f"model must be a tfd.JointDistribution*, got {type(model).__name__}.")
    if not isinstance(observed, Mapping):
        raise TypeError("observed must be a dict from variable name to value, e.g. {'y': y_data}.")
    names = _variable_names(model)
    unknown = sorted(set(observed) - set(names))
    if unknown:
        raise ValueError(f"observed names {unknown} are not variables of the model; its variables are {names}.")
    for name, value in observed.items():
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
            raise ValueError(f"observed[{name!r}] contains NaN or inf; drop or impute those values first.")
    _check_observed_against_model(model, names, observed)
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()
    free_names = _free_names(pinned.event_shape, [name for name in names if name not in observed])
    if initial_state is None:
        shapes = bijector.inverse_event_shape(pinned.event_shape)
        zeros = tf.nest.map_structure(lambda s, d: tf.zeros(s, d), shapes, pinned.dtype)
        initial_state = bijector.forward(zeros)
    return laplace_approximation(
        pinned.unnormalized_log_prob,
        initial_state,
        bijector,
        names=free_names,
        jacobian=jacobian,
        num_draws=num_draws,
        num_chains=num_chains,
        seed=seed,
        optimizer=optimizer,
        num_initial_points=num_initial_points,
        max_iterations=max_iterations,
        tolerance=tolerance,
        observed_data={name: np.asarray(value) for name, value in observed.items()},
    )


def laplace_approximation(
    target_log_prob_fn: Callable[..., tf.Tensor],
    initial_state: Any,
    bijector: Any = None,
    *,
    names: Any = None,
    jacobian: bool = True,
    num_draws: int = 1000,
    num_chains: int = 4,
    seed: int | None = None,
    optimizer: str = "lbfgs",
    num_initial_points: int = 1,
    max_iterations: int = 1000,
    tolerance: float = 1e-8,
    observed_data: Mapping[str, Any] | None = None,
) -> LaplaceResult:
    """The Laplace approximation of any log density over a tensor or a structure of tensors.

    Args:
      target_log_prob_fn: the log density (up to a constant) of the constrained state. Called
        as in ``tfp.mcmc``: ``f(x)`` for one tensor, ``f(*parts)`` for a list or tuple, and
        ``f(state)`` for a dict or namedtuple.
      initial_state: the starting point (constrained); its structure is the state's structure.
      bijector: maps unconstrained to constrained values: one ``tfb.Bijector`` (for a single
        tensor, or a joint bijector), or a structure of them like ``initial_state``. ``None``:
        the state is unconstrained.
      names: the parts' names, in the state's structure; default: dict keys, namedtuple fields,
        ``x0, x1, ...`` for a list, ``x`` for one tensor.
      observed_data: recorded in the ArviZ ``observed_data`` group.

    The other arguments (``jacobian``, ``num_draws``, ``num_chains``, ``seed``, ``optimizer``,
    ``num_initial_points``, ``max_iterations``, ``tolerance``) are as in [`fit_laplace`][laplace_tf.fit_laplace].

    Example:
        ```python
        >>> result = lt.laplace_approximation(lambda x: -0.5 * tf.reduce_sum(x**2), tf.ones(3, tf.float64))
        >>> result.covariance          # the identity
        ```
    """
    if not callable(target_log_prob_fn):
        raise TypeError(f"target_log_prob_fn must be a function of the state, got {type(target_log_prob_fn).__name__}.")
    _check_finite_state(initial_state)
    if isinstance(initial_state, (list, tuple)) and not hasattr(initial_state, "_fields"):

        def log_density(state: Any) -> tf.Tensor:
            return target_log_prob_fn(*state)
    else:
        log_density = target_log_prob_fn
    initial_state = tf.nest.map_structure(tf.convert_to_tensor, initial_state)
    if names is None:
        names = _default_names(initial_state)
    bijector = _as_bijector(bijector, initial_state)
    _check_counts(num_draws, num_chains, num_initial_points)
    state, start, log_density_of = _unconstrained(log_density, initial_state, bijector, names)

    def objective(z: tf.Tensor) -> tf.Tensor:
        return -log_density_of(z, jacobian)

    seeds = tf.random.experimental.stateless_split(stateless_seed(seed), 2)
    mode = find_mode(
        objective, _initial_points(start, num_initial_points, seeds[0]), optimizer, max_iterations, tolerance
    )
    precision = hessian(objective, mode.position)
    _warn_if_not_converged(mode, tolerance, precision)
    _check_positive_definite(precision, state.row_names)
    return LaplaceResult(
        posterior=FullPosterior(mode.position, precision, constant=True),  # nothing differentiates it
        state=state,
        bijector=bijector,
        optimizer_result=mode,
        log_density=lambda z: log_density_of(z, True),
        jacobian=jacobian,
        num_draws=num_draws,
        num_chains=num_chains,
        seed=seeds[1],
        observed_data=observed_data,
    )


def _unconstrained(
    log_density: Callable[[Any], tf.Tensor], initial_state: Any, bijector: tfb.Bijector, names: Any
) -> tuple[FlatState, tf.Tensor, Callable[[tf.Tensor, bool], tf.Tensor]]:
    """The flat unconstrained state, the starting point in it, and $\\ell(z)$ with or without Jacobian."""
    unconstrained = bijector.inverse(initial_state)
    state = FlatState(tf.nest.map_structure(lambda u: u.shape, unconstrained), names)
    event_ndims = tf.nest.map_structure(lambda u: u.shape.rank, unconstrained)
    start = state.flatten(unconstrained)
    _check_floating(start)

    def log_density_of(z: tf.Tensor, with_jacobian: bool) -> tf.Tensor:
        u = state.unflatten(z)
        value = log_density(bijector.forward(u))
        if with_jacobian:
            value += bijector.forward_log_det_jacobian(u, event_ndims)
        return tf.reshape(value, [])

    return state, start, log_density_of


def _warn_if_not_converged(mode: Any, tolerance: float, precision: tf.Tensor) -> None:
    """Warns unless the optimiser converged or the mean is within ``MODE_SLACK`` standard deviations of the mode.

    The distance $\\sqrt{g^\\top H^{-1} g}$ is the length of the Newton step to the mode in the
    Gaussian's own metric: a gradient entry above ``tolerance`` on a steep objective may still
    leave the mean a negligible fraction of a standard deviation away.
    """
    if mode.converged:
        return
    gradient = np.asarray(mode.gradient, dtype=np.float64)
    with np.errstate(all="ignore"):
        try:
            squared = float(gradient @ np.linalg.solve(np.asarray(precision, dtype=np.float64), gradient))
        except np.linalg.LinAlgError:
            squared = np.inf
    distance = np.sqrt(squared) if squared >= 0 else np.inf  # an indefinite Hessian: no Gaussian metric
    if distance < MODE_SLACK:
        return
    warnings.warn(
        f"The {mode.optimizer} optimiser did not converge in {mode.num_iterations} iterations (largest gradient "
        f"entry {mode.gradient_norm:.3g} > tolerance {tolerance:g}): the mean is {distance:.2g} posterior "
        "standard deviations from the mode. Raise max_iterations, try optimizer='bfgs', or start nearer the "
        "mode (initial_state).",
        RuntimeWarning,
        stacklevel=4,
    )


def _initial_points(start: tf.Tensor, count: int, seed: tf.Tensor) -> tf.Tensor:
    extra = tf.random.stateless_uniform(
        [count - 1, start.shape[0]], seed, -INITIAL_POINT_RANGE, INITIAL_POINT_RANGE, dtype=start.dtype
    )
    return tf.concat([start[None], extra], axis=0)


def _check_positive_definite(precision: tf.Tensor, row_names: list[str]) -> None:
    """Raises, naming the variables of the worst directions, unless ``-Hessian`` is positive definite."""
    matrix = precision.numpy()
    if not np.all(np.isfinite(matrix)):
        bad = sorted({row_names[i] for i in np.argwhere(~np.isfinite(matrix))[:, 0]})
        raise NotPositiveDefiniteError(f"The Hessian at the mode is not finite in the rows of {bad[:5]}.")
    values, vectors = np.linalg.eigh(matrix)
    threshold = 100 * len(values) * np.finfo(matrix.dtype).eps * max(np.abs(values).max(), 1.0)
    bad = np.flatnonzero(values <= threshold)
    if len(bad) == 0:
        return
    directions = []
    for index in bad[:3]:
        weights = np.abs(vectors[:, index])
        top = np.argsort(weights)[::-1][:3]
        parts = ", ".join(f"{row_names[i]} ({vectors[i, index]:+.2f})" for i in top if weights[i] > 0.05)
        directions.append(f"eigenvalue {values[index]:.3g} along {parts}")
    raise NotPositiveDefiniteError(
        "The negative Hessian of the log density at the mode is not positive definite, so no Gaussian "
        f"fits there (a saddle point or a flat direction): {'; '.join(directions)}. Give these variables "
        "a proper prior, or start the optimiser elsewhere (initial_state, num_initial_points)."
    )


def _check_counts(num_draws: int, num_chains: int, num_initial_points: int) -> None:
    counts = {"num_draws": num_draws, "num_chains": num_chains, "num_initial_points": num_initial_points}
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if num_draws % num_chains:
        raise ValueError(f"num_draws={num_draws} must be a multiple of num_chains={num_chains}.")


def _check_floating(start: tf.Tensor) -> None:
    if not start.dtype.is_floating:
        raise TypeError(f"The state must be floating point (float32 or float64), got {start.dtype.name}.")
    if not np.all(np.isfinite(start.numpy())):
        raise ValueError("initial_state maps to non-finite unconstrained values; is it inside the support?")


def _default_names(state: Any) -> Any:
    if isinstance(state, Mapping):
        return {key: str(key) for key in state}
    if hasattr(state, "_fields"):
        return type(state)(*state._fields)
    if isinstance(state, (list, tuple)):
        return type(state)(f"x{i}" for i in range(len(state)))
    return "x"


def _check_finite_state(initial_state: Any) -> None:
    """Refuses a starting point that is not numbers, or holds NaN or inf, naming ``initial_state``."""
    for part in tf.nest.flatten(initial_state):
        values = np.asarray(part)
        if values.dtype.kind not in "biuf":
            raise TypeError(f"initial_state must hold numbers, got {values.dtype}.")
        if not np.all(np.isfinite(values)):
            raise ValueError("initial_state contains NaN or inf; start from finite values inside the support.")


def _check_observed_against_model(model: tfd.JointDistribution, names: list[str], observed: Mapping) -> None:
    """Refuses, before any tracing, observed values of the wrong shape, discrete free variables
    (Laplace needs continuous parameters) and a model with nothing left to infer."""
    free = [name for name in names if name not in observed]
    if not free:
        raise ValueError(
            f"Every variable of the model is observed ({names}); leave at least one unobserved to infer it."
        )
    distributions, draw = model.sample_distributions(seed=(0, 0))
    distributions, draw = _by_name(distributions, names), _by_name(draw, names)
    for name, value in observed.items():
        expected, given = tuple(draw[name].shape), np.shape(value)
        if tuple(given) != expected:
            raise ValueError(
                f"observed[{name!r}] has shape {tuple(given)}, but the model's {name!r} has shape {expected}; "
                "pass one value per element the model generates (or change the model's shapes)."
            )
    discrete = {
        name: type(distributions[name]).__name__
        for name in free
        if not draw[name].dtype.is_floating or distributions[name].experimental_default_event_space_bijector() is None
    }
    if discrete:
        raise ValueError(
            f"The free variables {discrete} are discrete; the Laplace approximation needs continuous "
            "parameters: observe them, or marginalise them out of the model."
        )


def _by_name(parts: Any, names: list[str]) -> dict[str, Any]:
    """A joint sample (or its distributions) as a dict by variable name: from a dict, a namedtuple,
    or a list in graph order."""
    if isinstance(parts, Mapping):
        return {name: parts[name] for name in names}
    if hasattr(parts, "_fields"):
        return {name: getattr(parts, name) for name in names}
    return dict(zip(names, parts, strict=True))


def _variable_names(model: tfd.JointDistribution) -> list[str]:
    """All the model's variable names: dict keys, Coroutine fields, or Sequential's resolved graph."""
    event_shape = model.event_shape
    if isinstance(event_shape, Mapping):
        return list(event_shape)
    if hasattr(event_shape, "_fields"):
        return list(event_shape._fields)
    return [name for name, _ in model.resolve_graph()]


def _free_names(event_shape: Any, free_in_order: list[str]) -> Any:
    """Names in the pinned model's state structure: dict keys, namedtuple fields, or graph order."""
    if isinstance(event_shape, Mapping):
        return {key: key for key in event_shape}
    if hasattr(event_shape, "_fields"):
        return type(event_shape)(*event_shape._fields)
    return list(free_in_order)


def _as_bijector(bijector: Any, state: Any) -> tfb.Bijector:
    if bijector is None:
        if tf.is_tensor(state):
            return tfb.Identity()
        return tfb.JointMap(tf.nest.map_structure(lambda _: tfb.Identity(), state))
    if isinstance(bijector, tfb.Bijector):
        return bijector
    return tfb.JointMap(bijector)
