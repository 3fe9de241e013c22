"""Calibration metrics against hand computations on tiny cases."""

import numpy as np
import pytest

from laplace_tf.reports import calibration

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


def test_adaptive_ece_confidence_and_entropy_by_hand():
    # equal-mass bins of two: {0.6 wrong, 0.7 right} gap |.5-.65|, {0.8 wrong, 0.9 right} gap |.5-.85|
    assert calibration.adaptive_calibration_error(PROBS, LABELS, n_bins=2) == pytest.approx((0.15 + 0.35) / 2)
    bins = calibration.calibration_bins(PROBS, LABELS, n_bins=2, strategy="quantile")
    np.testing.assert_array_equal(bins["count"], [2, 2])
    np.testing.assert_allclose(bins["edges"], [0.0, 0.8, 1.0])
    assert calibration.mean_confidence(PROBS) == pytest.approx(0.75)
    by_hand = [-(p * np.log(p) + (1 - p) * np.log(1 - p)) for p in (0.9, 0.6, 0.3, 0.2)]
    np.testing.assert_allclose(calibration.entropy(PROBS), by_hand)
    assert calibration.mean_entropy(PROBS) == pytest.approx(np.mean(by_hand))
    assert calibration.entropy(np.array([[1.0, 0.0]]))[0] == 0.0


def test_auroc_equals_the_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    scores_in, scores_out = rng.integers(0, 5, 40), rng.integers(2, 8, 25)
    pairs = [(o > i) + 0.5 * (o == i) for i in scores_in for o in scores_out]
    assert calibration.auroc(scores_in, scores_out) == pytest.approx(np.mean(pairs))
    assert calibration.auroc([0.1, 0.2], [0.15, 0.9]) == pytest.approx(0.75)


def test_ood_auroc_by_confidence_and_entropy():
    probs_in = np.array([[0.95, 0.05], [0.8, 0.2]])
    probs_out = np.array([[0.55, 0.45], [0.85, 0.15]])
    # OOD score -confidence: in {-.95, -.8}, out {-.55, -.85}: pairs won 1 + 1 + 1 + 0 of 4
    assert calibration.ood_auroc(probs_in, probs_out, score="confidence") == pytest.approx(0.75)
    # entropy is monotone in confidence for two classes, so the same ordering
    assert calibration.ood_auroc(probs_in, probs_out, score="entropy") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="score must be one of"):
        calibration.ood_auroc(probs_in, probs_out, score="margin")


MEAN = np.array([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
VARIANCE = np.array([[1.0, 0.25], [4.0, 1.0], [0.5, 2.0]])
Y = np.array([[0.3, 1.2], [-1.0, -1.1], [2.5, 0.0]])


def test_regression_rmse_and_nll_by_hand():
    assert calibration.root_mean_squared_error(MEAN, Y) == pytest.approx(np.sqrt(np.mean((Y - MEAN) ** 2)))
    per_example = [
        sum(0.5 * np.log(2 * np.pi * v) + 0.5 * (t - m) ** 2 / v for m, v, t in zip(*rows, strict=True))
        for rows in zip(MEAN, VARIANCE, Y, strict=True)
    ]
    assert calibration.gaussian_negative_log_likelihood(MEAN, VARIANCE, Y) == pytest.approx(np.mean(per_example))


def test_crps_equals_the_integral_of_the_squared_cdf_gap():
    from statistics import NormalDist

    grid = np.linspace(-30.0, 30.0, 600_001)
    integrals = []
    for m, v, t in zip(MEAN.ravel(), VARIANCE.ravel(), Y.ravel(), strict=True):
        cdf = np.array([NormalDist(m, np.sqrt(v)).cdf(g) for g in grid[::100]])
        cdf = np.interp(grid, grid[::100], cdf)
        squared_gap = (cdf - (grid >= t)) ** 2
        integrals.append(np.sum((squared_gap[1:] + squared_gap[:-1]) / 2 * np.diff(grid)))
    crps = calibration.continuous_ranked_probability_score(MEAN, VARIANCE, Y)
    assert crps == pytest.approx(np.mean(integrals), rel=1e-4)


def test_coverage_calibration_error_and_width_by_hand():
    mean, variance, y = np.zeros(4), np.ones(4), np.array([0.1, -0.5, 1.0, 3.0])
    # |z| = .1, .5, 1, 3 against half-widths .674 (50%) and 1.960 (95%)
    assert calibration.coverage(mean, variance, y, levels=[0.5, 0.95]) == {0.5: 0.5, 0.95: 0.75}
    error = calibration.coverage_calibration_error(mean, variance, y, levels=[0.5, 0.95])
    assert error == pytest.approx((0.0 + 0.2) / 2)
    widths = calibration.interval_width(np.array([1.0, 4.0]), levels=[0.5, 0.95])
    assert widths[0.5] == pytest.approx(2 * 0.6744897501960817 * 1.5)
    assert widths[0.95] == pytest.approx(2 * 1.959963984540054 * 1.5)
    # a (N,) target with (N, 1) predictions is accepted
    assert calibration.coverage(mean[:, None], variance[:, None], y, levels=[0.5])[0.5] == 0.5


def test_bad_regression_metric_input():
    with pytest.raises(ValueError, match="variance must be finite and positive"):
        calibration.coverage(MEAN, -VARIANCE, Y)
    with pytest.raises(ValueError, match="levels must be probabilities"):
        calibration.coverage(MEAN, VARIANCE, Y, levels=[95])
    with pytest.raises(ValueError, match="shape of mean"):
        calibration.gaussian_negative_log_likelihood(MEAN, VARIANCE[:, :1], Y)
    with pytest.raises(ValueError, match="pass probabilities, not logits"):
        calibration.mean_confidence(np.array([[2.0, -1.0]]))
