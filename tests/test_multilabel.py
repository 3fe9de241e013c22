"""likelihood="multilabel": K independent sigmoids, checked against K separate binary Laplaces.

A linear model's labels share no weights, so its multilabel posterior is the product of the K
binary posteriors of its columns: evidence, predictive and curvature must all split exactly.
"""

import keras
import numpy as np
import pytest

import laplace_tf as lt
from laplace_tf.reports import calibration

N_LABELS = 3


def linear_model(n_in: int, n_out: int, kernel: np.ndarray, bias: np.ndarray) -> keras.Model:
    model = keras.Sequential([keras.Input((n_in,), dtype="float64"), keras.layers.Dense(n_out, dtype="float64")])
    model.layers[0].set_weights([kernel, bias])
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4))
    kernel, bias = rng.normal(size=(4, N_LABELS)), rng.normal(size=N_LABELS)
    y = (rng.uniform(size=(60, N_LABELS)) < 1 / (1 + np.exp(-(x @ kernel + bias)))).astype(int)
    return x, y, kernel, bias


@pytest.fixture(scope="module")
def multilabel(data):
    x, y, kernel, bias = data
    la = lt.Laplace(
        linear_model(4, N_LABELS, kernel, bias), "multilabel", hessian_structure="full", subset_of_weights="all"
    )
    return la.fit((x, y), verbose=False)


def binary_laplace(data, label: int, prior: float = 1.0) -> lt.Laplace:
    x, y, kernel, bias = data
    model = linear_model(4, 1, kernel[:, label : label + 1], bias[label : label + 1])
    la = lt.Laplace(model, "binary", hessian_structure="full", prior_precision=prior, subset_of_weights="all")
    return la.fit((x, y[:, label]), verbose=False)


def test_a_linear_model_splits_into_independent_binary_laplaces(data, multilabel):
    x = data[0]
    binaries = [binary_laplace(data, k, prior=2.5) for k in range(N_LABELS)]
    evidence = sum(float(b.log_marginal_likelihood()) for b in binaries)
    np.testing.assert_allclose(multilabel.log_marginal_likelihood(2.5), evidence, rtol=1e-10)
    multilabel.prior_precision = 2.5
    expected = np.concatenate([b.predict(x[:9]).numpy() for b in binaries], axis=1)
    np.testing.assert_allclose(multilabel.predict(x[:9]), expected, rtol=1e-10)
    # the curvature of label k's weights (kernel column k and bias k) is the binary one
    curvature = multilabel.curvature.numpy()
    for k, b in enumerate(binaries):
        rows = np.r_[np.arange(k, 4 * N_LABELS, N_LABELS), 4 * N_LABELS + k]
        np.testing.assert_allclose(curvature[np.ix_(rows, rows)], b.curvature, rtol=1e-10, atol=1e-13)
    multilabel.prior_precision = 1.0


def test_predictive_distribution_is_independent_bernoullis(data, multilabel):
    x, y = data[0][:7], data[1][:7]
    probs = multilabel.predict(x).numpy()
    expected = np.sum(y * np.log(probs) + (1 - y) * np.log(1 - probs), axis=1)
    np.testing.assert_allclose(multilabel.predictive_distribution(x).log_prob(y), expected, rtol=1e-10)


def test_report_metrics_against_hand_computation(data, multilabel):
    x, y = data[0], data[1]
    report = multilabel.evaluate(x, y)
    assert report.task == "multilabel"
    probs = multilabel.predict(x).numpy()
    metrics = report.metrics["Laplace"]
    np.testing.assert_allclose(metrics["accuracy"], np.mean((probs > 0.5) == y))
    np.testing.assert_allclose(metrics["subset_accuracy"], np.mean(np.all((probs > 0.5) == y, axis=1)))
    nll = -np.mean(np.sum(y * np.log(probs) + (1 - y) * np.log(1 - probs), axis=1))
    np.testing.assert_allclose(metrics["nll"], nll, rtol=1e-10)
    np.testing.assert_allclose(metrics["brier"], np.mean((probs - y) ** 2), rtol=1e-10)
    for k in range(N_LABELS):
        two_columns = np.stack([1 - probs[:, k], probs[:, k]], axis=1)
        np.testing.assert_allclose(
            metrics[f"ece[{k}]"], calibration.expected_calibration_error(two_columns, y[:, k], 15), rtol=1e-10
        )
    assert "nll[2] ↓" in str(report)


def test_grid_search_and_marglik_tuning(data):
    x, y, kernel, bias = data
    la = lt.Laplace(
        linear_model(4, N_LABELS, kernel, bias), "multilabel", hessian_structure="kron", subset_of_weights="all"
    )
    la.fit((x, y), verbose=False)
    grid = np.array([0.1, 1.0, 10.0])
    best = la.optimize_prior_precision(method="gridsearch", val_data=(x, y), grid=grid)
    scores = []
    for value in grid:
        la.prior_precision = value
        scores.append(lt.multilabel_report({"L": la.predict(x).numpy()}, y).metrics["L"]["nll"])
    np.testing.assert_allclose(la.grid_scores, scores, rtol=1e-10)
    assert float(best) == grid[int(np.argmin(scores))]
    tuned = float(la.optimize_prior_precision())  # marglik: the evidence's gradient vanishes there
    step = 1e-4
    around = [float(la.log_marginal_likelihood(tuned * np.exp(s))) for s in (-step, step)]
    assert abs(around[1] - around[0]) / (2 * step) < 1e-3


def test_inference_data_draws_every_label(data, multilabel):
    x, y = data[0][:10], data[1][:10]
    idata = multilabel.to_inference_data(x, y, num_draws=100, num_chains=2, seed=0)
    assert idata.observed_data["y"].shape == (10, N_LABELS)
    draws = idata.posterior_predictive["y"].values
    assert draws.shape[-2:] == (10, N_LABELS) and set(np.unique(draws)) <= {0, 1}
    draws = draws.reshape(-1, 10, N_LABELS)
    probs = multilabel.predict(x, link_approx="mc", n_samples=2000, seed=0).numpy()
    assert np.max(np.abs(draws.mean(axis=0) - probs)) < 4 * 0.5 / np.sqrt(len(draws))  # one Bernoulli per draw
    log_likelihood = idata.log_likelihood["y"].values.reshape(len(draws), 10)  # labels summed per example
    assert np.all(log_likelihood < 0) and np.all(np.isfinite(log_likelihood))


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (np.full((60, N_LABELS), 2), "must be 0 or 1"),
        (np.zeros(60, dtype=int), r"shape \(60,\)"),
        (np.zeros((60, 2), dtype=int), r"\(N, 3\)"),
        (np.full((60, N_LABELS), 0.5), "whole numbers"),
    ],
)
def test_bad_targets_are_refused(data, targets, message):
    x, _, kernel, bias = data
    la = lt.Laplace(
        linear_model(4, N_LABELS, kernel, bias), "multilabel", subset_of_weights="all", hessian_structure="full"
    )
    with pytest.raises(ValueError, match=message):
        la.fit((x, targets), verbose=False)
