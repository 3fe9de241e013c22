r"""Calibration metrics for classifiers, from predicted probabilities ``(N, C)`` and labels ``(N,)``.

With $p_n$ the predicted probabilities of example $n$, $c_n = \max_c p_{nc}$
its confidence and $\hat y_n = \arg\max_c p_{nc}$ its predicted class:

* accuracy: $\frac1N \sum_n [\hat y_n = y_n]$;
* NLL: $-\frac1N \sum_n \log p_{n y_n}$;
* Brier score: $\frac1N \sum_n \lVert p_n - e_{y_n} \rVert^2$;
* ECE: with the confidences put in bins $B_m$, $\sum_m \frac{|B_m|}{N}
  \lvert \mathrm{acc}(B_m) - \mathrm{conf}(B_m) \rvert$; equal-width bins give the usual ECE,
  equal-mass bins (each holding about $N/M$ examples) the adaptive ECE;
* MCE: the largest of those gaps over non-empty equal-width bins;
* mean confidence $\frac1N \sum_n c_n$ and mean predictive entropy
  $-\frac1N \sum_n \sum_c p_{nc} \log p_{nc}$.

Metrics take NumPy arrays or tensors, so they apply to any model's predictions.

Example:
    ```python
    >>> probs = np.array([[0.9, 0.1], [0.4, 0.6]])
    >>> accuracy(probs, np.array([0, 0]))
    0.5
    >>> expected_calibration_error(probs, np.array([0, 0]), n_bins=2)
    0.25
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPSILON = 1e-12
BIN_STRATEGIES = ("uniform", "quantile")


def accuracy(probs: Any, labels: Any) -> float:
    """The fraction of examples whose most probable class is the label."""
    probs, labels = checked_classification(probs, labels)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """The mean negative log probability of the labels (probabilities clipped at 1e-12)."""
    probs, labels = checked_classification(probs, labels)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPSILON, 1.0))))


def brier_score(probs: Any, labels: Any) -> float:
    """The mean squared distance between the probabilities and the one-hot labels."""
    probs, labels = checked_classification(probs, labels)
    return float(np.mean(np.sum((probs - np.eye(probs.shape[1])[labels]) ** 2, axis=1)))


def mean_confidence(probs: Any) -> float:
    """The mean probability of the predicted class."""
    return float(np.mean(checked_probs(probs).max(axis=1)))


def entropy(probs: Any) -> np.ndarray:
    """Each example's predictive entropy in nats, ``(N,)`` (``0 log 0 = 0``)."""
    probs = checked_probs(probs)
    return -np.sum(np.where(probs > 0, probs * np.log(np.clip(probs, EPSILON, 1.0)), 0.0), axis=1)


def mean_entropy(probs: Any) -> float:
    """The mean predictive entropy in nats; ``log C`` is the most uncertain possible."""
    return float(np.mean(entropy(probs)))


def calibration_bins(probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform") -> dict[str, np.ndarray]:
    """Per confidence bin: ``count``, ``accuracy``, ``confidence`` (NaN where empty) and ``edges``.

    Args:
      probs: ``(N, C)`` predicted probabilities.
      labels: ``(N,)`` integer labels.
      n_bins: the number of bins.
      strategy: ``"uniform"`` (equal-width bins over [0, 1]) or ``"quantile"`` (equal-mass bins:
        the sorted confidences cut into ``n_bins`` groups of sizes differing by at most one).
    """
    probs, labels = checked_classification(probs, labels)
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    if strategy not in BIN_STRATEGIES:
        raise ValueError(f"strategy must be one of {BIN_STRATEGIES}, got {strategy!r}.")
    confidence = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels
    if strategy == "uniform":
        index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        order = np.argsort(confidence, kind="stable")
        index = np.empty(len(confidence), dtype=int)
        for b, members in enumerate(np.array_split(order, n_bins)):
            index[members] = b
        edges = _quantile_edges(np.sort(confidence), n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
        bin_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
    return {"count": count, "accuracy": bin_accuracy, "confidence": bin_confidence, "edges": edges}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE over ``n_bins`` equal-width confidence bins."""
    return _weighted_gap(calibration_bins(probs, labels, n_bins))


def adaptive_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Adaptive (equal-mass) ECE: ECE over ``n_bins`` bins holding equally many examples."""
    return _weighted_gap(calibration_bins(probs, labels, n_bins, strategy="quantile"))


def max_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """MCE: the largest accuracy-confidence gap over non-empty equal-width bins."""
    bins = calibration_bins(probs, labels, n_bins)
    filled = bins["count"] > 0
    return float(np.max(np.abs(bins["accuracy"][filled] - bins["confidence"][filled])))


def _weighted_gap(bins: dict[str, np.ndarray]) -> float:
    filled = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(bins["count"][filled] / bins["count"].sum() * gaps))


def _quantile_edges(sorted_confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges for equal-mass bins: 0, the first confidence of each later bin, and 1."""
    starts = [members[0] for members in np.array_split(np.arange(len(sorted_confidence)), n_bins) if len(members)]
    inner = sorted_confidence[starts[1:]]
    return np.concatenate([[0.0], inner, [1.0]])


def checked_probs(probs: Any) -> np.ndarray:
    """``probs`` as a float64 ``(N, C)`` array of probabilities, or a ValueError saying what is wrong."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"probs must be a non-empty (N, C) array of class probabilities; got shape {probs.shape}.")
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1 + 1e-6:
        raise ValueError("probs must be finite probabilities in [0, 1]; pass probabilities, not logits.")
    return probs


def checked_classification(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(N, C)`` probabilities and ``(N,)`` integer labels in ``[0, C)``."""
    probs, labels = checked_probs(probs), np.asarray(labels)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (N, C) and labels (N,); got {probs.shape} and {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integers in [0, {probs.shape[1]}).")
    return probs, labels
