"""Calibration metrics against hand computations on tiny cases."""

import numpy as np
import pytest

from laplace_tf import calibration

PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
LABELS = np.array([0, 1, 1, 0])


def test_accuracy_nll_brier_by_hand():
    assert calibration.accuracy(PROBS, LABELS) == 0.5
    expected_nll = -(np.log(0.9) + np.log(0.4) + np.log(0.7) + np.log(0.2)) / 4
    assert calibration.negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected_nll)
    expected_brier = (0.01 * 2 + 0.36 * 2 + 0.09 * 2 + 0.64 * 2) / 4
    assert calibration.brier_score(PROBS, LABELS) == pytest.approx(expected_brier)


def test_ece_and_mce_by_hand():
    # confidences 0.9, 0.6, 0.7, 0.8 with 2 bins: [0, .5) empty, [.5, 1] all four:
    # accuracy 0.5, mean confidence 0.75 -> ECE = MCE = 0.25
    assert calibration.expected_calibration_error(PROBS, LABELS, n_bins=2) == pytest.approx(0.25)
    # 10 bins: each example alone; gaps |1-.9|, |0-.6|, |1-.7|, |0-.8| -> mean .45, max .8
    assert calibration.expected_calibration_error(PROBS, LABELS, n_bins=10) == pytest.approx(0.45)
    assert calibration.max_calibration_error(PROBS, LABELS, n_bins=10) == pytest.approx(0.8)


def test_bad_metric_input():
    with pytest.raises(ValueError, match="labels must be integers"):
        calibration.accuracy(PROBS, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        calibration.accuracy(PROBS[:, 0], LABELS)
