"""UncertaintyReport: calibration metrics of several predictives (e.g. MAP and Laplace) side by side.

A report holds, per predictive ("column"), every metric of `calibration` on the
same data, the curves behind its plot (reliability bins for classifiers, coverage by level for
regression) and the settings that produced it. It prints as a table, exports to a dict, JSON or
Markdown, and plots as PNG.

Build one from any model's predictions with
[`classification_report`][laplace_tf.classification_report],
[`multilabel_report`][laplace_tf.multilabel_report] or
[`regression_report`][laplace_tf.regression_report];
[`Laplace.evaluate`][laplace_tf.Laplace.evaluate] builds one for a fitted Laplace.

Example:
    ```python
    >>> report = classification_report({"MAP": map_probs, "Laplace": la_probs}, labels)
    >>> print(report)
    >>> report.to_json("report.json"); report.plot("reliability.png")
    ```
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from laplace_tf.files import write_atomically
from laplace_tf.reports import calibration
from laplace_tf.reports.calibration.classification import checked_classification
from laplace_tf.reports.calibration.regression import checked_gaussian

COVERAGE_CURVE_LEVELS = (*np.round(np.arange(0.05, 1.0, 0.05), 2).tolist(), 0.99)
LOWER_IS_BETTER = ("nll", "brier", "ece", "adaptive_ece", "mce", "rmse", "crps", "calibration_error")
HIGHER_IS_BETTER = ("accuracy", "subset_accuracy", "ood_auroc_entropy", "ood_auroc_confidence", "ood_auroc_std")


@dataclass(frozen=True)
class UncertaintyReport:
    """Metrics of several predictives on the same data.

    Attributes:
      task: ``"classification"``, ``"multilabel"``, ``"regression"`` or ``"preference pairs"`` (a
        reward model's pairs scored as classification: ``accuracy`` is the pairwise accuracy).
      n_examples: the number of test examples; ``n_ood`` of out-of-distribution ones (0 if none).
      metrics: per column (e.g. ``"MAP"``, ``"Laplace"``), metric name to value.
      curves: per column, the plotted curve: ``confidence``, ``accuracy`` and ``count`` per
        reliability bin, or ``level``, ``coverage`` and ``width`` per interval level.
      settings: what produced the predictions (structure, link approximation, prior, ...).
    """

    task: str
    n_examples: int
    metrics: dict[str, dict[str, float]]
    curves: dict[str, dict[str, list[float]]]
    settings: dict[str, Any] = field(default_factory=dict)
    n_ood: int = 0

    @property
    def columns(self) -> list[str]:
        """The predictives compared, in order."""
        return list(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as plain JSON-ready Python values (NaN becomes ``None``)."""
        return _json_ready(
            {
                "task": self.task,
                "n_examples": self.n_examples,
                "n_ood": self.n_ood,
                "metrics": self.metrics,
                "curves": self.curves,
                "settings": self.settings,
            }
        )

    def to_json(self, path: str | None = None, indent: int = 2) -> str:
        """The report as JSON; written (atomically) to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_atomically(path, lambda file: file.write(text.encode()))
        return text

    def to_markdown(self) -> str:
        """A Markdown table, one row per metric and one column per predictive."""
        header = f"| metric | {' | '.join(self.columns)} |"
        rule = "|---|" + "---:|" * len(self.columns)
        rows = [
            f"| {_label(name)} | {' | '.join(_format(self.metrics[c].get(name)) for c in self.columns)} |"
            for name in self.metric_names
        ]
        return "\n".join([header, rule, *rows])

    @property
    def metric_names(self) -> list[str]:
        """Every metric in the report, in display order."""
        names: list[str] = []
        for column in self.columns:
            names += [name for name in self.metrics[column] if name not in names]
        return names

    def __str__(self) -> str:
        title = f"Uncertainty report ({self.task}, {self.n_examples} examples"
        title += f", {self.n_ood} out-of-distribution)" if self.n_ood else ")"
        width = max(len(_label(name)) for name in self.metric_names) + 2
        lines = [title, " " * width + "".join(f"{c:>12}" for c in self.columns)]
        for name in self.metric_names:
            values = "".join(f"{_format(self.metrics[c].get(name)):>12}" for c in self.columns)
            lines.append(f"{_label(name):<{width}}{values}")
        lines.append("(↓ lower is better, ↑ higher is better)")
        return "\n".join(lines)

    def plot(self, path: str | None = None, dpi: int = 120) -> Any:
        """A reliability diagram (classification) or coverage curve (regression); PNG at ``path``.

        Returns the ``matplotlib.figure.Figure``. Needs matplotlib (``pip install 'laplace-tf[plot]'``).
        """
        from laplace_tf.reports.report_plot import plot_report

        return plot_report(self, path, dpi)


def classification_report(
    predictions: Mapping[str, Any],
    labels: Any,
    ood_predictions: Mapping[str, Any] | None = None,
    *,
    n_bins: int = 15,
    settings: Mapping[str, Any] | None = None,
    task: str = "classification",
) -> UncertaintyReport:
    """A report on class probabilities ``(N, C)`` per predictive, with integer ``labels`` ``(N,)``.

    Args:
      predictions: column name to probabilities, e.g. ``{"MAP": p_map, "Laplace": p_la}``.
      labels: the true classes.
      ood_predictions: the same columns' probabilities on out-of-distribution inputs; adds the
        AUROC of telling them apart by entropy and by confidence, and their mean entropy.
      n_bins: bins of the ECE, MCE, adaptive ECE and reliability diagram.
      settings: recorded in the report as they are.
      task: what the classes are, for the title (``"preference pairs"`` for a reward model).
    """
    metrics, curves = {}, {}
    for column, probs in predictions.items():
        probs, labels = checked_classification(probs, labels)
        metrics[column] = {
            "accuracy": calibration.accuracy(probs, labels),
            "nll": calibration.negative_log_likelihood(probs, labels),
            "brier": calibration.brier_score(probs, labels),
            "ece": calibration.expected_calibration_error(probs, labels, n_bins),
            "adaptive_ece": calibration.adaptive_calibration_error(probs, labels, n_bins),
            "mce": calibration.max_calibration_error(probs, labels, n_bins),
            "confidence": calibration.mean_confidence(probs),
            "entropy": calibration.mean_entropy(probs),
        }
        if ood_predictions is not None:
            ood = ood_predictions[column]
            metrics[column]["ood_auroc_entropy"] = calibration.ood_auroc(probs, ood, "entropy")
            metrics[column]["ood_auroc_confidence"] = calibration.ood_auroc(probs, ood, "confidence")
            metrics[column]["ood_entropy"] = calibration.mean_entropy(ood)
        bins = calibration.calibration_bins(probs, labels, n_bins)
        curves[column] = {key: bins[key].tolist() for key in ("confidence", "accuracy", "count")}
    n_ood = len(next(iter(ood_predictions.values()))) if ood_predictions else 0
    return UncertaintyReport(task, len(labels), metrics, curves, dict(settings or {}), n_ood)


def multilabel_report(
    predictions: Mapping[str, Any],
    targets: Any,
    ood_predictions: Mapping[str, Any] | None = None,
    *,
    n_bins: int = 15,
    settings: Mapping[str, Any] | None = None,
) -> UncertaintyReport:
    """A report on per-label probabilities ``(N, K)`` per predictive, with 0/1 ``targets`` ``(N, K)``.

    Each label is a binary problem with class probabilities $[1 - p_k, p_k]$. The averaged
    metrics pool every (example, label) pair: ``accuracy`` (of thresholding at 0.5),
    ``subset_accuracy`` (every label of an example right), ``nll`` (per example, summed over
    labels), ``brier`` (the mean of $(p - y)^2$) and ``ece`` (of the pooled binary problems, the
    one the reliability diagram shows). Per label ``k``: ``accuracy[k]``, ``nll[k]``, ``ece[k]``.

    Args:
      predictions: column name to probabilities, e.g. ``{"MAP": p_map, "Laplace": p_la}``.
      targets: the true labels, 0 or 1.
      ood_predictions: the same columns' probabilities on out-of-distribution inputs; adds the
        AUROC of telling them apart by the mean entropy over labels, and that mean entropy.
      n_bins: bins of the ECE and the reliability diagram.
      settings: recorded in the report as they are.
    """
    targets = np.asarray(targets)
    metrics, curves = {}, {}
    for column, probs in predictions.items():
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape != targets.shape:
            raise ValueError(f"probabilities must be (N, K) like the targets; got {probs.shape} and {targets.shape}.")
        pooled, pooled_labels = _as_binary(probs.ravel(), targets.ravel())
        metrics[column] = {
            "accuracy": calibration.accuracy(pooled, pooled_labels),
            "subset_accuracy": float(np.mean(np.all((probs > 0.5) == (targets == 1), axis=1))),
            "nll": calibration.negative_log_likelihood(pooled, pooled_labels) * targets.shape[1],
            "brier": float(np.mean((probs - targets) ** 2)),
            "ece": calibration.expected_calibration_error(pooled, pooled_labels, n_bins),
        }
        for label in range(targets.shape[1]):
            label_probs, labels = _as_binary(probs[:, label], targets[:, label])
            metrics[column][f"accuracy[{label}]"] = calibration.accuracy(label_probs, labels)
            metrics[column][f"nll[{label}]"] = calibration.negative_log_likelihood(label_probs, labels)
            metrics[column][f"ece[{label}]"] = calibration.expected_calibration_error(label_probs, labels, n_bins)
        if ood_predictions is not None:
            entropy_in, entropy_out = (_mean_label_entropy(p) for p in (probs, ood_predictions[column]))
            metrics[column]["ood_auroc_entropy"] = calibration.auroc(entropy_in, entropy_out)
            metrics[column]["ood_entropy"] = float(np.mean(entropy_out))
        bins = calibration.calibration_bins(pooled, pooled_labels, n_bins)
        curves[column] = {key: bins[key].tolist() for key in ("confidence", "accuracy", "count")}
    n_ood = len(next(iter(ood_predictions.values()))) if ood_predictions else 0
    return UncertaintyReport("multilabel", len(targets), metrics, curves, dict(settings or {}), n_ood)


def _as_binary(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of label 1 ``(M,)`` as two-class probabilities ``(M, 2)``, with integer labels."""
    return checked_classification(np.stack([1 - probs, probs], axis=1), labels.astype(np.int64))


def _mean_label_entropy(probs: Any) -> np.ndarray:
    """Per example, the mean over labels of the binary entropy (nats)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), calibration.classification.EPSILON, 1.0)
    q = np.clip(1 - np.asarray(probs, dtype=np.float64), calibration.classification.EPSILON, 1.0)
    return np.mean(-(p * np.log(p) + q * np.log(q)), axis=1)


def regression_report(
    predictions: Mapping[str, tuple[Any, Any]],
    y: Any,
    ood_predictions: Mapping[str, tuple[Any, Any]] | None = None,
    *,
    levels: Sequence[float] = calibration.DEFAULT_LEVELS,
    settings: Mapping[str, Any] | None = None,
) -> UncertaintyReport:
    """A report on Gaussian predictives ``(mean, variance)`` per column, noise included.

    Args:
      predictions: column name to ``(mean, variance)``, each shaped like ``y``.
      y: the targets, ``(N,)`` or ``(N, K)``.
      ood_predictions: the same columns' ``(mean, variance)`` on out-of-distribution inputs; adds
        the AUROC of telling them apart by predictive standard deviation.
      levels: central-interval levels for coverage and width.
      settings: recorded in the report as they are.
    """
    metrics, curves = {}, {}
    for column, (mean, variance) in predictions.items():
        mean, variance, targets = checked_gaussian(mean, variance, y)
        covered = calibration.coverage(mean, variance, targets, levels)
        widths = calibration.interval_width(variance, levels)
        metrics[column] = {
            "rmse": calibration.root_mean_squared_error(mean, targets),
            "nll": calibration.gaussian_negative_log_likelihood(mean, variance, targets),
            "crps": calibration.continuous_ranked_probability_score(mean, variance, targets),
            **{f"coverage_{_percent(level)}": value for level, value in covered.items()},
            "calibration_error": calibration.coverage_calibration_error(mean, variance, targets, levels),
            **{f"width_{_percent(level)}": value for level, value in widths.items()},
        }
        if ood_predictions is not None:
            std_in = np.sqrt(variance).mean(axis=tuple(range(1, variance.ndim)))
            ood_variance = np.asarray(ood_predictions[column][1], dtype=np.float64)
            std_out = np.sqrt(ood_variance).reshape(len(ood_variance), -1).mean(axis=1)
            metrics[column]["ood_auroc_std"] = calibration.auroc(std_in, std_out)
        curve = calibration.coverage(mean, variance, targets, COVERAGE_CURVE_LEVELS)
        curve_widths = calibration.interval_width(variance, COVERAGE_CURVE_LEVELS)
        curves[column] = {
            "level": list(curve),
            "coverage": list(curve.values()),
            "width": list(curve_widths.values()),
        }
    n_ood = len(next(iter(ood_predictions.values()))[0]) if ood_predictions else 0
    return UncertaintyReport("regression", len(np.asarray(y)), metrics, curves, dict(settings or {}), n_ood)


def _percent(level: float) -> str:
    return f"{100 * level:g}"


def _label(name: str) -> str:
    base = name.split("[")[0]  # per-label metrics, e.g. "ece[2]"
    arrow = " ↓" if base in LOWER_IS_BETTER else " ↑" if base in HIGHER_IS_BETTER else ""
    return name + arrow


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _json_ready(value: Any) -> Any:
    """NumPy scalars and arrays to Python values, NaN and inf to ``None``, keys to strings."""
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(item) for item in np.asarray(value, dtype=object).tolist()]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
