r"""Choosing a subnetwork: which weights get a posterior (subnetwork Laplace, Daxberger et al. 2021).

`subnetwork_mask` returns boolean masks, one per trainable variable, that
``Laplace(subset_of_weights=...)`` accepts; a ``full`` curvature over the chosen $S$ weights
then captures their correlations at $O(S^2)$ memory, while the other weights stay at their
trained values. Strategies:

* ``"largest_magnitude"``: the $S$ weights with the largest $|\theta_p|$;
* ``"largest_variance"``: the $S$ largest marginal posterior variances of a ``diag`` GGN
  Laplace fitted on ``data``, $1 / (\operatorname{diag}(\sum_n J_n^\top \Lambda_n J_n)_p +
  \lambda)$ (laplace-torch's ``LargestVarianceDiagLaplaceSubnetMask``);
* ``"random"``: $S$ weights drawn uniformly without replacement
  (``numpy.random.default_rng(seed).choice``);
* ``"last_layer"``: every weight of the last layer (``n_params`` may be left out);
* a list of variable-path patterns (``["dense_1/*"]``): every weight of the matching variables.

Ties are broken by the order of the weights in the flattened model (variable by variable, each
row-major).

Example:
    ```python
    >>> mask = lt.subnetwork_mask(model, "largest_variance", 500, data=(x, y), likelihood="classification")
    >>> la = lt.Laplace(model, "classification", subset_of_weights=mask, hessian_structure="full")
    ```
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from laplace_tf.networks.layer_order import last_called_layer_path
from laplace_tf.networks.params import accepts_training, select_indices
from laplace_tf.networks.validation import check_seed, positive_int

STRATEGIES = ("largest_magnitude", "largest_variance", "random", "last_layer")


def subnetwork_mask(
    model: keras.Model,
    strategy: str | list[str],
    n_params: int | None = None,
    *,
    data: Any = None,
    likelihood: str | None = None,
    prior_precision: float = 1.0,
    batch_size: int = 128,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Boolean masks (variable path to a mask of its shape) selecting a subnetwork of ``model``.

    Args:
      model: a built Keras model.
      strategy: ``"largest_magnitude"``, ``"largest_variance"``, ``"random"``,
        ``"last_layer"``, or a list of variable-path patterns.
      n_params: how many weights to choose (not for ``"last_layer"`` or patterns).
      data: ``(x, y)`` or a ``tf.data.Dataset``, for ``"largest_variance"``.
      likelihood: the likelihood of ``data``, for ``"largest_variance"``.
      prior_precision: the diagonal Laplace's prior precision, for ``"largest_variance"``.
      batch_size: the batch size of that fit.
      seed: makes ``"random"`` reproducible.

    Returns:
      ``{variable.path: boolean array of the variable's shape}`` for every trainable variable.
    """
    variables = model.trainable_variables
    if not variables:
        raise ValueError("The model has no trainable weights (is it built?); call it on an input first.")
    sizes = [int(np.prod(v.shape)) for v in variables]
    if not isinstance(strategy, str) or strategy == "last_layer":
        if n_params is not None:
            raise ValueError(f"n_params is not used with strategy={strategy!r}: it selects whole variables.")
        kwargs = {"training": False} if accepts_training(model) else {}
        last_layer = last_called_layer_path(model, kwargs) if strategy == "last_layer" else None
        return _masks_from_selection(variables, select_indices(variables, strategy, last_layer))
    if strategy not in STRATEGIES:
        raise ValueError(
            f"strategy={strategy!r} is not valid; choose one of {', '.join(map(repr, STRATEGIES))} "
            "or give a list of variable-path patterns."
        )
    if n_params is None:
        raise ValueError(f"strategy={strategy!r} needs n_params, the number of weights to choose.")
    n_params = positive_int(n_params, "n_params")
    if n_params > sum(sizes):
        raise ValueError(f"n_params={n_params} is more than the model's {sum(sizes)} trainable weights.")
    if strategy == "random":
        chosen = np.random.default_rng(check_seed(seed)).choice(sum(sizes), n_params, replace=False)
    else:
        score = _scores(model, strategy, data, likelihood, prior_precision, batch_size)
        chosen = np.argsort(-score, kind="stable")[:n_params]
    flat = np.zeros(sum(sizes), bool)
    flat[chosen] = True
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return {v.path: piece.reshape(tuple(v.shape)) for v, piece in zip(variables, pieces, strict=True)}


def _scores(
    model: keras.Model, strategy: str, data: Any, likelihood: str | None, prior_precision: float, batch_size: int
) -> np.ndarray:
    """Per weight, in flattened order: $|\\theta|$, or the diagonal Laplace's posterior variance."""
    if strategy == "largest_magnitude":
        return np.concatenate([np.abs(np.asarray(v)).ravel() for v in model.trainable_variables])
    if data is None or likelihood is None:
        raise ValueError("strategy='largest_variance' needs data=(x, y) and the likelihood to fit a diagonal Laplace.")
    from laplace_tf.networks.laplace import Laplace

    la = Laplace(model, likelihood, subset_of_weights="all", hessian_structure="diag", prior_precision=prior_precision)
    la.fit(data, batch_size=batch_size, verbose=False)
    return np.asarray(la.posterior.variance, np.float64)


def _masks_from_selection(variables: list, selection: list) -> dict[str, np.ndarray]:
    masks = {}
    for variable, indices in zip(variables, selection, strict=True):
        mask = np.zeros(int(np.prod(variable.shape)), bool)
        if indices is not None:
            mask[indices] = True
        masks[variable.path] = mask.reshape(tuple(variable.shape))
    return masks
