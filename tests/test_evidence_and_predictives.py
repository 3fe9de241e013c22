"""Prior tuning (marglik, grid search), link approximations, joint predictives, accumulated fits."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, make_mlp, naive_jacobians, set_flat_weights, softmax_np

import laplace_tf as lt
from laplace_tf.reports import calibration


@pytest.fixture
def classifier(classification_data):
    model = make_mlp(4, N_CLASSES)
    return lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        classification_data, verbose=False
    ), model


def _hand_evidence(la, model, data, prior):
    """The Laplace evidence from NumPy: cross-entropy, slogdet of H + prior I, scatter."""
    x, y = data
    logits = np.asarray(model(x))
    log_lik = np.sum(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(axis=1)))
    curvature = la.curvature.numpy()
    precision = curvature + prior * np.eye(len(curvature))
    theta = la.mean.numpy()
    return log_lik - 0.5 * (np.linalg.slogdet(precision)[1] - len(theta) * np.log(prior) + prior * theta @ theta)


def test_marglik_optimum_is_the_argmax_of_a_dense_grid(classifier, classification_data):
    la, model = classifier
    tuned = float(la.optimize_prior_precision())
    grid = np.geomspace(tuned / 3, tuned * 3, 401)
    values = [_hand_evidence(la, model, classification_data, g) for g in grid]
    assert abs(np.log(grid[int(np.argmax(values))]) - np.log(tuned)) <= np.log(grid[1] / grid[0])
    np.testing.assert_allclose(float(la.log_marginal_likelihood()), max(values), rtol=1e-9)


def test_layerwise_and_diag_tuning_increase_the_evidence(classifier):
    la, _ = classifier
    scalar = float(la.log_marginal_likelihood(la.optimize_prior_precision()))
    layerwise = float(la.log_marginal_likelihood(la.optimize_prior_precision(prior_structure="layerwise")))
    assert la.prior_precision.shape == (4,) and layerwise >= scalar - 1e-9
    diag = float(la.log_marginal_likelihood(la.optimize_prior_precision(prior_structure="diag")))
    assert la.prior_precision.shape == (la.n_params,) and diag >= layerwise - 1e-9


@pytest.mark.parametrize("metric", ["nll", "ece", "brier"])
def test_grid_search_picks_the_best_score_computed_by_hand(classifier, metric):
    la, _ = classifier
    rng = np.random.default_rng(11)
    x_val, y_val = rng.normal(size=(30, 4)), rng.integers(0, N_CLASSES, size=30)
    grid = np.geomspace(0.01, 100, 9)
    best = float(la.optimize_prior_precision(method="gridsearch", val_data=(x_val, y_val), grid=grid, metric=metric))
    score = {
        "nll": calibration.negative_log_likelihood,
        "ece": calibration.expected_calibration_error,
        "brier": calibration.brier_score,
    }[metric]
    by_hand = []
    for value in grid:
        la.prior_precision = value
        by_hand.append(score(la.predict(x_val).numpy(), y_val))
    np.testing.assert_allclose(la.grid_scores, by_hand, rtol=1e-10)
    assert best == grid[int(np.argmin(by_hand))]


def test_grid_search_for_regression_scores_the_predictive_nll(regression_data):
    model = make_mlp(3, 2)
    la = lt.Laplace(model, "regression", sigma_noise=0.5, subset_of_weights="all", hessian_structure="full").fit(
        regression_data, verbose=False
    )
    x, y = regression_data
    grid = np.array([0.1, 1.0, 10.0])
    la.optimize_prior_precision(method="gridsearch", val_data=(x, y), grid=grid)
    from scipy import stats

    by_hand = []
    for value in grid:
        la.prior_precision = value
        f_mean, f_var = (t.numpy() for t in la.predict(x))
        by_hand.append(-np.mean(stats.norm(f_mean, np.sqrt(f_var + 0.25)).logpdf(y).sum(axis=1)))
    np.testing.assert_allclose(la.grid_scores, by_hand, rtol=1e-9)
    with pytest.raises(ValueError, match="regression uses 'nll'"):
        la.optimize_prior_precision(method="gridsearch", val_data=(x, y), metric="ece")


def _bridge_by_hand(mean, cov, normalize):
    """Hobbhahn et al.'s Laplace bridge, with the sum-to-zero conditioning, in NumPy."""
    ones = np.ones(len(mean))
    mean = mean - cov @ ones * (ones @ mean) / (ones @ cov @ ones)
    cov = cov - np.outer(cov @ ones, ones @ cov) / (ones @ cov @ ones)
    var, k = np.diag(cov).copy(), len(mean)
    if normalize:
        scale = var.mean() / np.sqrt(k / 2)
        mean, var = mean / np.sqrt(scale), var / scale
    alpha = (1 - 2 / k + np.exp(mean) / k**2 * np.exp(-mean).sum()) / var
    return alpha / alpha.sum()


@pytest.mark.parametrize("link", ["bridge", "bridge_norm"])
def test_laplace_bridge_equals_the_formula(classifier, classification_data, link):
    la, _ = classifier
    x = classification_data[0][:5]
    f_mean, f_var = (t.numpy() for t in la.glm_output_distribution(x))
    expected = np.stack([_bridge_by_hand(m, v, link == "bridge_norm") for m, v in zip(f_mean, f_var, strict=True)])
    probs = la.predict(x, link_approx=link).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-9)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_probit_and_mc_agree_when_the_variance_is_small(classification_data):
    model = make_mlp(4, N_CLASSES)
    la = lt.Laplace(
        model, "classification", prior_precision=1e4, subset_of_weights="all", hessian_structure="full"
    ).fit(classification_data, verbose=False)
    x = classification_data[0][:5]
    probit = la.predict(x).numpy()
    mc = la.predict(x, link_approx="mc", n_samples=20000, seed=0).numpy()
    np.testing.assert_allclose(probit, mc, atol=2e-3)
    np.testing.assert_allclose(probit, softmax_np(np.asarray(model(x))), atol=5e-3)


def test_joint_and_full_output_covariances(regression_data):
    model = make_mlp(3, 2)
    la = lt.Laplace(model, "regression", prior_precision=0.5, subset_of_weights="all", hessian_structure="full").fit(
        regression_data, verbose=False
    )
    x = regression_data[0][:4]
    mean, cov = (t.numpy() for t in la.predict(x, joint=True))
    jac = naive_jacobians(model, x).reshape(8, -1)
    np.testing.assert_allclose(cov, jac @ la.posterior.covariance.numpy() @ jac.T, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(mean, np.asarray(model(x)).ravel(), rtol=1e-12)
    _, f_var = la.predict(x)
    np.testing.assert_allclose(np.diag(cov).reshape(4, 2), f_var, rtol=1e-10)
    _, f_cov = la.predict(x, diagonal_output=False)
    np.testing.assert_allclose(
        f_cov, np.stack([cov[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] for i in range(4)]), rtol=1e-10
    )
    nn_mean, nn_cov = (t.numpy() for t in la.predict(x, pred_type="nn", n_samples=200, seed=0, joint=True))
    draws, outputs = la.sample(200, seed=0).numpy(), []
    for theta in draws:  # the same weight draws, through the Keras model itself
        set_flat_weights(model, theta)
        outputs.append(np.asarray(model(x)).ravel())
    set_flat_weights(model, la.mean.numpy())
    np.testing.assert_allclose(nn_mean, np.mean(outputs, axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nn_cov, np.cov(np.stack(outputs).T, bias=True), rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="are for regression"):
        lt.Laplace(make_mlp(3, 2), "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.array([0, 1, 0, 1])), verbose=False
        ).predict(x, joint=True)


@pytest.mark.parametrize("structure", ["full", "diag", "kron"])
def test_fitting_more_data_equals_fitting_it_all_at_once(classification_data, structure):
    model = make_mlp(4, N_CLASSES)
    x, y = classification_data
    whole = lt.Laplace(model, "classification", hessian_structure=structure, subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    parts = lt.Laplace(model, "classification", hessian_structure=structure, subset_of_weights="all").fit(
        (x[:10], y[:10]), verbose=False
    )
    parts.fit((x[10:], y[10:]), override=False, verbose=False)
    assert parts.n_data == whole.n_data
    np.testing.assert_allclose(parts.log_marginal_likelihood(), whole.log_marginal_likelihood(), rtol=1e-10)
    np.testing.assert_allclose(parts.predict(x[:3]), whole.predict(x[:3]), rtol=1e-10)


def test_adding_data_needs_the_same_weights_and_a_summable_structure(classification_data):
    model = make_mlp(4, N_CLASSES)
    x, y = classification_data
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    )
    model.layers[0].bias.assign(model.layers[0].bias.numpy() + 0.1)
    with pytest.raises(ValueError, match="weights changed"):
        la.fit((x, y), override=False, verbose=False)
    low = lt.Laplace(model, "classification", hessian_structure="lowrank", rank=3, subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    with pytest.raises(ValueError, match="cannot add data"):
        low.fit((x, y), override=False, verbose=False)
    with pytest.raises(lt.NotFittedError):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, y), override=False, verbose=False
        )


def test_temperature_scales_the_curvature_and_the_likelihood(classifier, classification_data):
    la, model = classifier
    hot = lt.Laplace(model, "classification", temperature=2.0, subset_of_weights="all", hessian_structure="full").fit(
        classification_data, verbose=False
    )
    np.testing.assert_allclose(hot.posterior.precision, la.curvature.numpy() / 2 + np.eye(la.n_params), rtol=1e-12)
    np.testing.assert_allclose(hot.log_likelihood(), la.log_likelihood() / 2, rtol=1e-12)


@pytest.mark.parametrize(
    ("structure", "prior_structure", "likelihood"),
    [
        ("diag", "scalar", "classification"),
        ("diag", "layerwise", "regression"),
        ("kron", "scalar", "regression"),
        ("kron", "layerwise", "classification"),
        ("full", "scalar", "regression"),
    ],
)
def test_closed_form_evidence_of_the_spectrum_equals_the_posterior_one(structure, prior_structure, likelihood):
    """Tuning evaluates the evidence and its gradient from the curvature's eigenvalues in NumPy:
    both equal log_marginal_likelihood (built from the posterior) and its autodiff gradient in
    (log prior, log sigma), at any prior and noise."""
    from laplace_tf.networks.evidence_spectrum import curvature_spectrum
    from laplace_tf.options import PriorStructure

    outputs = 3 if likelihood == "classification" else 2
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, size=30) if likelihood == "classification" else rng.normal(size=(30, 2))
    la = lt.Laplace(
        make_mlp(4, outputs), likelihood, hessian_structure=structure, prior_mean=0.05, subset_of_weights="all"
    )
    la.fit((x, y), verbose=False)
    spectrum = curvature_spectrum(la, PriorStructure(prior_structure))
    sigma = 0.7 if likelihood == "regression" else 1.0
    for _ in range(3):
        log_prior = tf.Variable(np.log(rng.uniform(0.1, 5.0, size=spectrum.n_groups)))
        log_sigma = tf.Variable(np.log(sigma))
        with tf.GradientTape() as tape:
            prior = tf.exp(log_prior)
            expected = la.log_marginal_likelihood(
                prior_precision=prior[0] if prior_structure == "scalar" else prior,
                sigma_noise=tf.exp(log_sigma) if likelihood == "regression" else None,
            )
        expected_prior_gradient, expected_sigma_gradient = tape.gradient(expected, [log_prior, log_sigma])
        evidence, prior_gradient, sigma_gradient = spectrum.evidence_and_gradient(log_prior.numpy(), np.log(sigma))
        np.testing.assert_allclose(evidence, expected, rtol=1e-10)
        np.testing.assert_allclose(prior_gradient, expected_prior_gradient, rtol=1e-8, atol=1e-10)
        expected_sigma_gradient = 0.0 if expected_sigma_gradient is None else expected_sigma_gradient  # classifiers
        np.testing.assert_allclose(sigma_gradient, expected_sigma_gradient, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(spectrum.log_marginal_likelihood(np.exp(log_prior.numpy()), sigma), evidence)
