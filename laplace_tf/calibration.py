r"""Calibration metrics for classifiers, from predicted probabilities and integer labels.

Metrics take NumPy arrays or tensors, so they apply to any model's predictions.

* accuracy: the fraction with :math:`\arg\max_c p_{nc} = y_n`;
* NLL: :math:`-\frac1N \sum_n \log p_{n y_n}`;
* Brier score: :math:`\frac1N \sum_n \lVert p_n - e_{y_n} \rVert^2`;
* ECE / MCE: with confidences :math:`c_n = \max_c p_{nc}` put in ``n_bins`` equal-width bins
  :math:`B_m`, :math:`\mathrm{ECE} = \sum_m \frac{|B_m|}{N} \lvert \mathrm{acc}(B_m) -
  \mathrm{conf}(B_m) \rvert` and MCE the largest of those gaps.

Example::

    >>> probs = np.array([[0.9, 0.1], [0.4, 0.6]])
    >>> accuracy(probs, np.array([0, 0]))
    0.5
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPSILON = 1e-12


def accuracy(probs: Any, labels: Any) -> float:
    """The fraction of examples whose most probable class is the label."""
    probs, labels = _checked(probs, labels)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """The mean negative log probability of the labels (probabilities clipped at 1e-12)."""
    probs, labels = _checked(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPSILON, 1.0))))


def brier_score(probs: Any, labels: Any) -> float:
    """The mean squared distance between the probabilities and the one-hot labels."""
    probs, labels = _checked(probs, labels)
    return float(np.mean(np.sum((probs - np.eye(probs.shape[1])[labels]) ** 2, axis=1)))


def calibration_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: ``count``, ``accuracy`` and ``confidence`` (NaN if empty)."""
    probs, labels = _checked(probs, labels)
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    confidence = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels
    index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
        bin_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
    return {"count": count, "accuracy": bin_accuracy, "confidence": bin_confidence}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-width confidence bins."""
    bins = calibration_bins(probs, labels, n_bins)
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] / bins["count"].sum() * gaps))


def max_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """MCE: the largest accuracy-confidence gap over non-empty bins."""
    bins = calibration_bins(probs, labels, n_bins)
    filled = bins["count"] > 0
    return float(np.max(np.abs(bins["accuracy"][filled] - bins["confidence"][filled])))


def _checked(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (N, C) and labels (N,); got {probs.shape} and {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integers in [0, {probs.shape[1]}).")
    return probs, labels
