"""Predictives against hand computations: probit formula, quadrature, and a manual MC loop."""

import math

import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, make_mlp, naive_jacobians, set_flat_weights, softmax_np

import laplace_tf as lt


@pytest.fixture
def classifier(classification_data):
    model = make_mlp(4, N_CLASSES)
    return lt.Laplace(
        model, "classification", prior_precision=0.5, subset_of_weights="all", hessian_structure="full"
    ).fit(classification_data, verbose=False), model


def test_glm_probit_equals_the_formula(classifier, classification_data):
    la, model = classifier
    x = classification_data[0][:7]
    jac = naive_jacobians(model, x)
    f_var = np.einsum("nkp,pq,nkq->nk", jac, la.posterior.covariance.numpy(), jac)
    expected = softmax_np(np.asarray(model(x)) / np.sqrt(1 + math.pi / 8 * f_var))
    probs = la.predict(x)
    np.testing.assert_allclose(probs, expected, rtol=1e-10)
    np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-12)


def test_glm_monte_carlo_is_the_mean_softmax_of_gaussian_logits(classifier, classification_data):
    la, _ = classifier
    x = classification_data[0][:5]
    f_mean, f_var = la.glm_output_distribution(x)
    draws = np.random.default_rng(0).multivariate_normal
    # an independent Monte-Carlo estimate with NumPy's sampler
    expected = np.stack(
        [softmax_np(draws(m, v, size=100000)).mean(axis=0) for m, v in zip(f_mean.numpy(), f_var.numpy(), strict=True)]
    )
    np.testing.assert_allclose(la.predict(x, link_approx="mc", n_samples=100000, seed=1), expected, atol=4e-3)
    samples = la.predictive_samples(x, n_samples=50, seed=2)
    assert samples.shape == (50, 5, N_CLASSES)
    np.testing.assert_allclose(np.sum(samples, axis=-1), 1.0, rtol=1e-12)


def test_binary_probit_and_mc_against_quadrature():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), rng.integers(0, 2, size=30)
    model = make_mlp(2, 1, hidden=(4,))
    la = lt.Laplace(model, "binary", prior_precision=2.0, subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    )
    f_mean, f_var = (t.numpy()[:, 0] for t in la.glm_output_distribution(x[:6]))
    f_var = f_var[:, 0]
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E[sigmoid(f)], f ~ N(m, v), exactly
    exact = np.array(
        [
            np.sum(weights / (1 + np.exp(-(m + np.sqrt(v) * nodes)))) / np.sqrt(2 * np.pi)
            for m, v in zip(f_mean, f_var, strict=True)
        ]
    )
    mc = la.predict(x[:6], link_approx="mc", n_samples=200000, seed=0).numpy()[:, 0]
    np.testing.assert_allclose(mc, exact, atol=3e-3)
    probit = la.predict(x[:6]).numpy()[:, 0]
    np.testing.assert_allclose(probit, 1 / (1 + np.exp(-f_mean / np.sqrt(1 + np.pi / 8 * f_var))), rtol=1e-10)
    np.testing.assert_allclose(probit, exact, atol=0.02)  # probit is an approximation, and close
    distribution = la.predictive_distribution(x[:6])
    np.testing.assert_allclose(distribution.prob(np.ones(6)), probit, rtol=1e-10)


def test_nn_predictive_equals_a_manual_loop_over_weight_draws(classifier, classification_data):
    la, model = classifier
    x = classification_data[0][:8]
    draws = la.sample(25, seed=7).numpy()
    map_weights = la.mean.numpy()
    outputs = []
    for theta in draws:
        set_flat_weights(model, theta)
        outputs.append(softmax_np(np.asarray(model(x))))
    set_flat_weights(model, map_weights)
    np.testing.assert_allclose(
        la.predict(x, pred_type="nn", n_samples=25, seed=7), np.mean(outputs, axis=0), rtol=1e-10
    )
    samples = la.predictive_samples(x, n_samples=25, pred_type="nn", seed=7)
    np.testing.assert_allclose(samples, np.stack(outputs), rtol=1e-10)


def test_regression_predictive_distribution_adds_observation_noise(regression_data):
    model = make_mlp(3, 2)
    la = lt.Laplace(model, "regression", sigma_noise=0.3, subset_of_weights="all", hessian_structure="full").fit(
        regression_data, verbose=False
    )
    x = regression_data[0][:4]
    f_mean, f_var = la.predict(x)
    assert f_mean.shape == f_var.shape == (4, 2)
    distribution = la.predictive_distribution(x)
    np.testing.assert_allclose(distribution.variance(), f_var + 0.09, rtol=1e-12)
    np.testing.assert_allclose(distribution.mean(), f_mean, rtol=1e-12)
    _, full = la.glm_output_distribution(x)
    np.testing.assert_allclose(np.diagonal(full, axis1=1, axis2=2), f_var, rtol=1e-12)


def test_predictions_are_batched_without_changing_values(classifier, monkeypatch):
    la, _ = classifier
    x = np.random.default_rng(1).normal(size=(11, 4))
    whole = la.predict(x).numpy()
    monkeypatch.setattr("laplace_tf.networks.laplace_predictive.PREDICT_BATCH_SIZE", 3)
    np.testing.assert_allclose(la.predict(x), whole, rtol=1e-12)
    assert tf.is_tensor(la.predict(x, pred_type="nn", n_samples=3, seed=0))


def test_the_diag_glm_predictive_from_dense_factors_equals_jacobians():
    """Dense layers on matrices: J Sigma J^T from the layers' inputs and output gradients, no
    per-example Jacobians; with masks (parts of variables) the Jacobian path, equal too."""
    model = make_mlp(4, 3, hidden=(5, 6))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    masks = [np.ones(v.shape, bool) for v in model.trainable_variables]
    masks[0] = np.arange(masks[0].size).reshape(masks[0].shape) % 2 == 0
    for subset, factored in (("all", True), (masks, False)):
        la = lt.Laplace(
            model, "classification", hessian_structure="diag", subset_of_weights=subset, prior_precision=0.5
        )
        la.fit((x, y), verbose=False)
        assert (la._fitted_view.layer_factors is not None) == factored
        offsets = np.cumsum([0] + [int(np.prod(v.shape)) for v in model.trainable_variables])
        columns = np.concatenate([o + i for o, i in zip(offsets, la.params.selected_indices(), strict=False)])
        jacobians = naive_jacobians(model, x)[:, :, columns]  # the selected entries, variable by variable
        expected = la.posterior.functional_variance(jacobians)
        np.testing.assert_allclose(la.glm_output_distribution(x, verbose=False)[1], expected, rtol=1e-10, atol=1e-14)
