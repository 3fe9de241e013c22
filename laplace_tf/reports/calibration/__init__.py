"""Calibration and uncertainty metrics for any model's predictions (NumPy arrays or tensors).

* `classification`: accuracy, NLL, Brier, ECE, adaptive ECE, MCE,
  confidence, entropy, reliability bins;
* `regression`: RMSE, Gaussian NLL, CRPS, interval coverage and its
  calibration error, interval width;
* `ood`: AUROC of out-of-distribution detection.

Example:
    ```python
    >>> from laplace_tf import calibration
    >>> calibration.expected_calibration_error(probs, labels, n_bins=10)
    >>> calibration.coverage(mean, variance, y, levels=[0.5, 0.9])
    ```
"""

from laplace_tf.reports.calibration.classification import (
    accuracy,
    adaptive_calibration_error,
    brier_score,
    calibration_bins,
    entropy,
    expected_calibration_error,
    max_calibration_error,
    mean_confidence,
    mean_entropy,
    negative_log_likelihood,
)
from laplace_tf.reports.calibration.ood import auroc, ood_auroc
from laplace_tf.reports.calibration.regression import (
    DEFAULT_LEVELS,
    continuous_ranked_probability_score,
    coverage,
    coverage_calibration_error,
    gaussian_negative_log_likelihood,
    interval_width,
    root_mean_squared_error,
)

__all__ = [
    "DEFAULT_LEVELS",
    "accuracy",
    "adaptive_calibration_error",
    "auroc",
    "brier_score",
    "calibration_bins",
    "continuous_ranked_probability_score",
    "coverage",
    "coverage_calibration_error",
    "entropy",
    "expected_calibration_error",
    "gaussian_negative_log_likelihood",
    "interval_width",
    "max_calibration_error",
    "mean_confidence",
    "mean_entropy",
    "negative_log_likelihood",
    "ood_auroc",
    "root_mean_squared_error",
]
