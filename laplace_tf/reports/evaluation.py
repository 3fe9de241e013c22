"""Evaluate a fitted Laplace: its predictive and the MAP network's, side by side, on the same data.

The MAP column is the trained network alone: softmax or sigmoid of its outputs, or for regression
$\\mathcal{N}(f_*(x), \\sigma^2)$. The Laplace column is [`Laplace.predict`][laplace_tf.Laplace.predict] with the
given options, plus the observation noise for regression:
$\\mathcal{N}(\\bar f(x), \\operatorname{Var} f(x) + \\sigma^2)$.

Example:
    ```python
    >>> report = la.evaluate(x_test, y_test, x_ood=x_far_away)
    >>> print(report); report.plot("reliability.png")
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks import heteroscedastic, predictive
from laplace_tf.networks.data import check_unweighted
from laplace_tf.networks.dataset_predictions import batches_of, is_dataset, joined
from laplace_tf.networks.inputs import n_examples
from laplace_tf.networks.validation import check_same_length, positive_int
from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.reports import calibration
from laplace_tf.reports.report import UncertaintyReport, classification_report, multilabel_report, regression_report
from laplace_tf.seeds import fixed_seed


def evaluate(
    la: Any,
    x: Any,
    y: Any = None,
    x_ood: Any = None,
    *,
    pred_type: str = "glm",
    link_approx: str = "probit",
    n_samples: int = 100,
    seed: int | None = None,
    n_bins: int = 15,
    levels: Sequence[float] = calibration.DEFAULT_LEVELS,
) -> UncertaintyReport:
    """The MAP network and the Laplace predictive side by side on ``(x, y)`` (``la.evaluate``).

    Args:
      la: a fitted [`Laplace`][laplace_tf.Laplace] (``self`` when called as ``la.evaluate``).
      x: test inputs, or a batched ``tf.data.Dataset`` of ``(x, y)`` (then leave ``y`` out),
        evaluated in one pass (`laplace_tf.networks.dataset_predictions`).
      y: test targets: labels ``(N,)`` or one-hot, or regression targets.
      x_ood: out-of-distribution inputs (or a dataset of them): adds the AUROC of telling them
        from ``x`` (by entropy and confidence; by predictive standard deviation for regression).
      pred_type: the Laplace predictive, as in ``la.predict``; so are ``link_approx``,
        ``n_samples`` and ``seed``.
      n_bins: confidence bins of the ECE, MCE and reliability diagram.
      levels: central-interval levels of the regression coverage and width.

    Returns:
      An `UncertaintyReport`: print it, ``to_json``, ``plot``.
    """
    la._require_fitted()
    positive_int(n_bins, "n_bins")
    if levels is not None and not all(0 < float(level) < 1 for level in np.ravel(levels)):
        raise ValueError(f"levels must be central-interval levels strictly between 0 and 1, got {levels}.")
    options = {"pred_type": pred_type, "link_approx": link_approx, "n_samples": n_samples, "seed": fixed_seed(seed)}
    columns_of = _columns_function(la)
    ood_inputs = None if x_ood is None else _checked_inputs(la, x_ood, "x_ood")
    test, targets = _test_columns_and_targets(la, x, y, columns_of, options)
    ood = None if ood_inputs is None else _columns_over(la, ood_inputs, "x_ood", columns_of, options)
    settings = _settings(la, pred_type, link_approx)
    if la.likelihood.outcome in (LikelihoodName.REGRESSION, LikelihoodName.HETEROSCEDASTIC):
        return regression_report(test, targets, ood, levels=levels, settings=settings)
    if la.likelihood.outcome == LikelihoodName.MULTILABEL:
        return multilabel_report(test, targets, ood, n_bins=n_bins, settings=settings)
    labels = targets[:, 0].astype(int) if targets.shape[1] == 1 else np.argmax(targets, axis=1)
    task = "preference pairs" if la.likelihood.name == LikelihoodName.REWARD_MODELING else "classification"
    return classification_report(test, labels, ood, n_bins=n_bins, settings=settings, task=task)


Columns = Callable[[Any, Any, dict[str, Any]], dict[str, Any]]


def _columns_function(la: Any) -> Columns:
    """What the report compares for this likelihood, from validated inputs."""
    if la.likelihood.outcome in (LikelihoodName.REGRESSION, LikelihoodName.HETEROSCEDASTIC):
        return _regression_columns
    if la.likelihood.outcome == LikelihoodName.MULTILABEL:
        return _label_probabilities
    return _classification_columns


def _test_columns_and_targets(la: Any, x: Any, y: Any, columns_of: Columns, options: dict) -> tuple[dict, np.ndarray]:
    """The test columns and the validated targets; a dataset's in one pass, so every prediction
    stays beside its own target even if the dataset reshuffles on each pass."""
    if not is_dataset(x):
        if y is None:
            raise ValueError("y (the test targets) is missing; pass la.evaluate(x, y), or a dataset of (x, y).")
        x, y = la._inputs(x), np.asarray(y)
        check_same_length(n_examples(x), len(y))
        targets = la._validate_targets(y)  # before any prediction is made
        return columns_of(la, x, options), targets
    if y is not None:
        raise ValueError("x is a dataset of (x, y) batches, which holds the targets; leave y out.")
    check_unweighted(x)
    x = _checked_inputs(la, x, "x")
    columns, targets = [], []
    for index, (batch_x, batch_y) in enumerate(batches_of(x)):
        if batch_y is None:
            raise ValueError(f"Batch {index} of the dataset has no targets; evaluate needs a dataset of (x, y).")
        batch_x = la._inputs(batch_x, f"x (batch {index} of the dataset)")
        check_same_length(n_examples(batch_x), len(batch_y))
        targets.append(la._validate_targets(batch_y))
        columns.append(columns_of(la, batch_x, options))
    if not columns:
        raise ValueError("The dataset is empty; pass at least one batch to evaluate on.")
    return joined(columns, concatenate=np.concatenate), np.concatenate(targets)


def _checked_inputs(la: Any, x: Any, what: str) -> Any:
    """Arrays validated, or a dataset checked for a batch axis (its batches are validated as read)."""
    if not is_dataset(x):
        return la._inputs(x, what)
    la._check_batched_dataset(x)
    return x


def _columns_over(la: Any, x: Any, what: str, columns_of: Columns, options: dict) -> dict:
    """The columns of checked inputs that have no targets (``x_ood``), arrays or a dataset's batches."""
    if not is_dataset(x):
        return columns_of(la, x, options)
    columns = [columns_of(la, la._inputs(batch, f"{what} (a batch)"), options) for batch, _ in batches_of(x)]
    if not columns:
        raise ValueError(f"The dataset {what} is empty.")
    return joined(columns, concatenate=np.concatenate)


def _label_probabilities(la: Any, x: Any, options: dict[str, Any]) -> dict[str, np.ndarray]:
    """The MAP's and the Laplace predictive's probabilities, as ``predict`` returns them."""
    return {
        "MAP": predictive.link(la.map_outputs(x), la.likelihood.outcome).numpy(),
        "Laplace": la.predict(x, **options).numpy(),
    }


def _classification_columns(la: Any, x: Any, options: dict[str, Any]) -> dict[str, np.ndarray]:
    """Class probabilities ``(N, C)``: a binary model's ``p`` becomes ``[1 - p, p]``."""
    columns = _label_probabilities(la, x, options)
    if la.likelihood.outcome == LikelihoodName.BINARY:
        columns = {name: np.concatenate([1 - p, p], axis=1) for name, p in columns.items()}
    return columns


def _regression_columns(la: Any, x: Any, options: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Predictive means and variances, noise included: the MAP's and the Laplace's."""
    options = {key: value for key, value in options.items() if key != "link_approx"}
    if la.likelihood.name == LikelihoodName.HETEROSCEDASTIC:
        map_mean, map_noise = heteroscedastic.mean_and_variance(la.map_outputs(x))
        mean, epistemic, aleatoric = la.predict(x, **options)
        return {
            "MAP": (map_mean.numpy(), map_noise.numpy()),
            "Laplace": (mean.numpy(), (epistemic + aleatoric).numpy()),
        }
    noise = float(tf.square(la.sigma_noise))
    f_map = la.map_outputs(x).numpy()
    f_mean, f_var = la.predict(x, **options)
    return {"MAP": (f_map, np.full_like(f_map, noise)), "Laplace": (f_mean.numpy(), f_var.numpy() + noise)}


def _settings(la: Any, pred_type: str, link_approx: str) -> dict[str, Any]:
    prior = np.asarray(la.prior_precision)
    settings = {
        "likelihood": la.likelihood.name.value,
        "hessian_structure": la.hessian_structure.value,
        "subset_of_weights": la.subset_of_weights if isinstance(la.subset_of_weights, str) else "custom",
        "curvature": la.curvature_type.value,
        "n_params": la.n_params,
        "n_data": la.n_data,
        "pred_type": pred_type,
        "prior_precision": float(prior) if prior.ndim == 0 else f"{prior.size} values, mean {prior.mean():.4g}",
    }
    if la.likelihood.name == LikelihoodName.REGRESSION:
        settings["sigma_noise"] = float(la.sigma_noise)
    elif la.likelihood.name != LikelihoodName.HETEROSCEDASTIC:
        settings["link_approx"] = link_approx
    return settings
