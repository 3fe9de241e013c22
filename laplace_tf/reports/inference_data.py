r"""ArviZ data from a fitted Laplace: parameter draws, predictive draws and pointwise log-likelihoods.

Groups (each an ``xarray.Dataset`` with ``chain`` and ``draw`` dimensions where it has draws):

* ``posterior``: one variable per selected Keras variable (named by its path, ``/`` turned into
  ``.``), with the variable's shape and dims ``<name>_dim_<i>``; variables only partly in the
  posterior (masks) have one dim ``<name>_entry`` over the selected flat indices. The
  ``num_draws`` independent draws are split into ``num_chains`` chains, so ``r_hat`` is defined
  (and close to 1);
* ``observed_data``, ``posterior_predictive`` (draws of the observations) and ``log_likelihood``
  ($\log p(y_n \mid \theta_s)$ per draw and example, so ``az.loo`` and ``az.waic`` work),
  with dim ``obs_id``, when ``x`` and ``y`` are given;
* ``sample_stats``: ``log_q``, the Gaussian's log density of each draw, and ``log_p``, the log
  posterior density up to a constant (from ``x, y``; see `log_density`);
* ``fit``: ``mean_vector`` and ``standard_deviation`` over rows named like ``"dense.kernel[0,1]"``
  (as pymc-extras names them), and ``covariance_matrix`` (rows, columns) when there are at most
  ``max_covariance_rows`` parameters.

Example:
    ```python
    >>> data = la.to_inference_data(x_train, y_train, num_draws=400, seed=0)
    >>> az.summary(data, var_names=["dense_1.bias"]); az.loo(data)
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks import heteroscedastic
from laplace_tf.networks.dataset_predictions import is_dataset
from laplace_tf.networks.inputs import n_examples as count_examples
from laplace_tf.networks.validation import check_finite, check_memory, check_same_length
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.reports.arviz_compat import dataset, make_arviz_data
from laplace_tf.reports.log_density import log_posterior_density, pointwise_log_likelihood
from laplace_tf.seeds import stateless_seed


def to_inference_data(
    la: Any,
    x: Any = None,
    y: Any = None,
    *,
    num_draws: int = 1000,
    num_chains: int = 4,
    pred_type: str = "glm",
    seed: int | None = None,
    max_covariance_rows: int = 1000,
) -> Any:
    """ArviZ data of a fitted Laplace (``la.to_inference_data``); the groups are described above.

    Args:
      la: a fitted [`Laplace`][laplace_tf.Laplace] (``self`` when called as a method).
      x: data inputs (the training data, for ``az.loo`` and a ``log_p`` of the posterior): with
        ``y``, adds ``observed_data``, ``posterior_predictive``, ``log_likelihood`` and ``log_p``.
      y: data targets.
      num_draws: parameter draws in all, split into ``num_chains`` chains.
      num_chains: chains (must divide ``num_draws``).
      pred_type: outputs at the draws: ``"glm"`` (the linearised network) or ``"nn"``.
      seed: makes the draws reproducible.
      max_covariance_rows: the ``fit`` group holds the dense covariance up to this many parameters.

    Returns:
      ``arviz.InferenceData`` with arviz 0.x, an ``xarray.DataTree`` with arviz >= 1.
    """
    la._require_fitted()
    if (x is None) != (y is None):
        raise ValueError("Pass both x and y (for the predictive groups and log_p), or neither.")
    if not isinstance(num_chains, int) or not isinstance(num_draws, int) or num_chains < 1 or num_draws < 1:
        raise ValueError(f"num_draws and num_chains must be positive integers, got {num_draws!r} and {num_chains!r}.")
    if num_draws % num_chains:
        raise ValueError(f"num_draws={num_draws} must be a multiple of num_chains={num_chains}.")
    if is_dataset(x):
        raise TypeError(
            "to_inference_data takes arrays x and y: its groups hold draws for every example. Collect a "
            "dataset's batches first: x, y = map(np.concatenate, zip(*dataset.as_numpy_iterator()))."
        )
    if x is not None:
        x = la._inputs(x)
    targets = None if y is None else _checked_targets(la, x, y)
    n_examples = 0 if x is None else count_examples(x)
    check_memory(
        num_draws * (la.n_params + 3 * n_examples * la.n_outputs) * la.dtype.size,
        f"to_inference_data with {num_draws} draws of {la.n_params:,} parameters and {n_examples} examples",
        "pass fewer draws or examples, or use subset_of_weights='last_layer'",
        la.memory_limit,
    )
    seeds = tf.random.experimental.stateless_split(stateless_seed(seed), 2)
    thetas = la.sample(num_draws, seed=int(seeds[0, 0]))
    shape = (num_chains, num_draws // num_chains)
    groups = {"posterior": _posterior(la, thetas.numpy(), shape)}
    stats = {"log_q": (("chain", "draw"), la.posterior.log_prob(thetas).numpy().reshape(shape))}
    if targets is not None:
        outputs = la.outputs_at_draws(thetas, x, pred_type)
        groups |= _predictive_groups(la, outputs, targets, shape, seeds[1])
        log_p, _ = log_posterior_density(la, thetas, (x, y))
        stats["log_p"] = (("chain", "draw"), log_p.numpy().reshape(shape))
    groups["sample_stats"] = dataset(stats, _draw_coords(shape))
    groups["fit"] = _fit_group(la, max_covariance_rows)
    return make_arviz_data(groups)


def _checked_targets(la: Any, x: Any, y: Any) -> np.ndarray:
    """``y`` validated against ``x`` and the likelihood, before any draws are made."""
    check_same_length(count_examples(x), len(np.asarray(y)))
    targets = la._validate_targets(np.asarray(y))
    check_finite(targets, "y")
    return targets


def variable_names(la: Any) -> list[str]:
    """ArviZ names of the selected Keras variables: paths without the shared model prefix, ``/`` as ``.``."""
    paths = la.params.names
    parts = [path.split("/") for path in paths]
    if all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        stripped = ["/".join(p[1:]) for p in parts]
        if len(set(stripped)) == len(stripped):
            paths = stripped
    return [path.replace("/", ".") for path in paths]


def row_names(la: Any) -> list[str]:
    """A name per parameter, ``"<variable>[i,j]"`` by its index in the variable."""
    rows = []
    for name, shape, indices in zip(variable_names(la), la.params.shapes, la.params.selected_indices(), strict=True):
        if not shape:
            rows.append(name)
            continue
        for position in zip(*np.unravel_index(indices, shape), strict=True):
            rows.append(f"{name}[{','.join(str(int(i)) for i in position)}]")
    return rows


def _draw_coords(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {"chain": np.arange(shape[0]), "draw": np.arange(shape[1])}


def _posterior(la: Any, thetas: np.ndarray, shape: tuple[int, int]) -> Any:
    variables, coords = {}, _draw_coords(shape)
    pieces = np.split(thetas, np.cumsum(la.params.sizes)[:-1], axis=1)
    for name, var_shape, indices, piece in zip(
        variable_names(la), la.params.shapes, la.params.selected_indices(), pieces, strict=True
    ):
        if len(indices) == int(np.prod(var_shape)):
            dims = tuple(f"{name}_dim_{i}" for i in range(len(var_shape)))
            variables[name] = (("chain", "draw", *dims), piece.reshape(*shape, *var_shape))
        else:
            variables[name] = (("chain", "draw", f"{name}_entry"), piece.reshape(*shape, -1))
            coords[f"{name}_entry"] = indices
    return dataset(variables, coords)


def _predictive_groups(
    la: Any, outputs: tf.Tensor, targets: np.ndarray, shape: tuple[int, int], seed: tf.Tensor
) -> dict[str, Any]:
    """``observed_data``, ``posterior_predictive`` and ``log_likelihood`` for outputs ``(S, N, K)``."""
    log_likelihood = pointwise_log_likelihood(la, outputs, targets).numpy()
    draws = _observation_draws(la, outputs, seed).numpy()
    observed = _observed(la, targets)
    obs_dims = ("obs_id",) if observed.ndim == 1 else ("obs_id", "output")
    coords = {**_draw_coords(shape), "obs_id": np.arange(len(targets))}
    return {
        "observed_data": dataset({"y": (obs_dims, observed)}, {"obs_id": coords["obs_id"]}),
        "posterior_predictive": dataset(
            {"y": (("chain", "draw", *obs_dims), draws.reshape(*shape, *observed.shape))}, coords
        ),
        "log_likelihood": dataset({"y": (("chain", "draw", "obs_id"), log_likelihood.reshape(*shape, -1))}, coords),
    }


def _observed(la: Any, targets: np.ndarray) -> np.ndarray:
    """Targets as the user thinks of them: labels ``(N,)``, 0/1 ``(N,)`` or ``(N, K)`` (multilabel),
    or values ``(N,)``/``(N, K)``."""
    if la.likelihood.outcome == LikelihoodName.CLASSIFICATION:
        return np.argmax(targets, axis=1)
    if la.likelihood.outcome == LikelihoodName.BINARY:
        return targets[:, 0].astype(int)
    if la.likelihood.outcome == LikelihoodName.MULTILABEL:
        return targets.astype(int)
    return targets[:, 0] if targets.shape[1] == 1 else targets


def _observation_draws(la: Any, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One draw of each observation per parameter draw: labels, 0/1, or outputs plus noise."""
    name = la.likelihood.outcome
    if name == LikelihoodName.CLASSIFICATION:
        n_draws, n_examples, n_classes = outputs.shape
        logits = tf.reshape(outputs, [-1, n_classes])
        labels = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int64)
        return tf.reshape(labels, [n_draws, n_examples])
    if name in (LikelihoodName.BINARY, LikelihoodName.MULTILABEL):
        uniform = tf.random.stateless_uniform(tf.shape(outputs), seed, dtype=outputs.dtype)
        draws = tf.cast(uniform < tf.sigmoid(outputs), tf.int64)
        return draws[..., 0] if name == LikelihoodName.BINARY else draws
    if name == LikelihoodName.HETEROSCEDASTIC:
        mean, variance = heteroscedastic.mean_and_variance(outputs)
        draws = mean + tf.sqrt(variance) * tf.random.stateless_normal(tf.shape(mean), seed, dtype=outputs.dtype)
        return draws[..., 0] if draws.shape[-1] == 1 else draws
    noise = tf.random.stateless_normal(tf.shape(outputs), seed, dtype=outputs.dtype)
    draws = outputs + tf.cast(la.sigma_noise, outputs.dtype) * noise
    return draws[..., 0] if outputs.shape[-1] == 1 else draws


def _fit_group(la: Any, max_covariance_rows: int) -> Any:
    rows = row_names(la)
    variables = {
        "mean_vector": (("rows",), la.mean.numpy()),
        "standard_deviation": (("rows",), np.sqrt(la.posterior.variance.numpy())),
    }
    coords: dict[str, Any] = {"rows": rows}
    if la.n_params <= max_covariance_rows:
        variables["covariance_matrix"] = (("rows", "columns"), la.posterior.covariance.numpy())
        coords["columns"] = rows
    fit = dataset(variables, coords)
    fit.attrs |= {
        "likelihood": la.likelihood.name.value,
        "hessian_structure": la.hessian_structure.value,
        "curvature": la.curvature_type.value,
        "n_data": la.n_data,
        "log_marginal_likelihood": float(la.log_marginal_likelihood()),
    }
    return fit
