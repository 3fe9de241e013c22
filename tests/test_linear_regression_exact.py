"""Bayesian linear regression: the Laplace approximation is exact, so everything has a closed form.

Model y = X w + b + noise, noise ~ N(0, sigma^2), prior w, b ~ N(0, 1/lambda). With the design
A = [X, 1], the posterior is N(m, S) with S^-1 = A^T A / sigma^2 + lambda I and
m = S A^T y / sigma^2, and the evidence is log N(y | 0, sigma^2 I + A A^T / lambda).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import set_flat_weights
from scipy import stats

import laplace_tf as lt

SIGMA, PRIOR = 0.7, 2.5


@pytest.fixture
def problem():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.3 + SIGMA * rng.normal(size=40)
    design = np.hstack([x, np.ones((40, 1))])  # keras order: kernel (3,1) then bias (1,)
    precision = design.T @ design / SIGMA**2 + PRIOR * np.eye(4)
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y / SIGMA**2
    model = keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")])
    set_flat_weights(model, mean)  # the MAP
    return x, y, design, mean, precision, covariance, model


def _evidence(design, y, prior, sigma):
    return stats.multivariate_normal(np.zeros(len(y)), sigma**2 * np.eye(len(y)) + design @ design.T / prior).logpdf(y)


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_posterior_and_evidence_equal_the_closed_form(problem, curvature):
    x, y, design, mean, precision, covariance, model = problem
    la = lt.Laplace(
        model,
        "regression",
        curvature=curvature,
        sigma_noise=SIGMA,
        prior_precision=PRIOR,
        subset_of_weights="all",
        hessian_structure="full",
    )
    la.fit((x, y), batch_size=16, verbose=False)
    np.testing.assert_allclose(la.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(la.posterior.precision, precision, rtol=1e-10)
    np.testing.assert_allclose(la.posterior.covariance, covariance, rtol=1e-9)
    np.testing.assert_allclose(la.log_marginal_likelihood(), _evidence(design, y, PRIOR, SIGMA), rtol=1e-10)


def test_evidence_at_other_hyperparameters_is_the_closed_form_there(problem):
    x, y, design, _, _, _, model = problem
    la = lt.Laplace(
        model, "regression", sigma_noise=SIGMA, prior_precision=PRIOR, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    # At other hyperparameters the MAP moves, so the Laplace value is the closed form plus the
    # misfit of the old mean: compare instead with a hand-built evidence at the fixed mean.
    prior, sigma = 0.8, 1.3
    theta = la.mean.numpy()
    residual = y - design @ theta
    log_lik = -0.5 * residual @ residual / sigma**2 - len(y) * np.log(sigma * np.sqrt(2 * np.pi))
    post_precision = design.T @ design / sigma**2 + prior * np.eye(4)
    expected = log_lik - 0.5 * (np.linalg.slogdet(post_precision)[1] - 4 * np.log(prior) + prior * theta @ theta)
    np.testing.assert_allclose(la.log_marginal_likelihood(prior, sigma), expected, rtol=1e-10)


def test_evidence_gradient_matches_finite_differences(problem):
    x, y, *_, model = problem
    la = lt.Laplace(
        model, "regression", sigma_noise=SIGMA, prior_precision=PRIOR, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    prior, sigma = tf.Variable(1.7, dtype=tf.float64), tf.Variable(0.9, dtype=tf.float64)
    with tf.GradientTape() as tape:
        value = la.log_marginal_likelihood(prior, sigma)
    grads = tape.gradient(value, [prior, sigma])
    eps = 1e-6
    fd_prior = (
        float(la.log_marginal_likelihood(1.7 + eps, 0.9)) - float(la.log_marginal_likelihood(1.7 - eps, 0.9))
    ) / (2 * eps)
    fd_sigma = (
        float(la.log_marginal_likelihood(1.7, 0.9 + eps)) - float(la.log_marginal_likelihood(1.7, 0.9 - eps))
    ) / (2 * eps)
    np.testing.assert_allclose([float(g) for g in grads], [fd_prior, fd_sigma], rtol=1e-6)


def test_predictive_equals_the_closed_form(problem):
    x, y, _, mean, _, covariance, model = problem
    la = lt.Laplace(
        model, "regression", sigma_noise=SIGMA, prior_precision=PRIOR, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    x_new = np.random.default_rng(9).normal(size=(6, 3))
    a_new = np.hstack([x_new, np.ones((6, 1))])
    f_mean, f_var = la.predict(x_new)
    np.testing.assert_allclose(f_mean[:, 0], a_new @ mean, rtol=1e-12)
    np.testing.assert_allclose(f_var[:, 0], np.einsum("np,pq,nq->n", a_new, covariance, a_new), rtol=1e-9)
    y_new = a_new @ mean + 0.4
    scale = np.sqrt(np.einsum("np,pq,nq->n", a_new, covariance, a_new) + SIGMA**2)
    np.testing.assert_allclose(
        la.predictive_distribution(x_new).log_prob(y_new[:, None]),
        stats.norm(a_new @ mean, scale).logpdf(y_new),
        rtol=1e-10,
    )
    # the nn predictive is exact in expectation for a linear model: check it with many draws
    nn_mean, nn_var = la.predict(x_new, pred_type="nn", n_samples=20000, seed=0)
    np.testing.assert_allclose(nn_mean, f_mean, atol=4 * np.sqrt(f_var.numpy().max() / 20000))
    np.testing.assert_allclose(nn_var, f_var, rtol=0.05)


def test_tuned_prior_and_noise_maximise_the_closed_form_evidence(problem):
    x, y, *_, model = problem
    la = lt.Laplace(
        model, "regression", sigma_noise=1.0, prior_precision=1.0, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    la.optimize_prior_precision(optimize_sigma_noise=True)
    prior, sigma = float(la.prior_precision), float(la.sigma_noise)

    def value(p, s):
        return float(la.log_marginal_likelihood(p, s))

    best = value(prior, sigma)
    for factor in (0.9, 1.1):  # no better point nearby, in either coordinate
        assert value(prior * factor, sigma) < best and value(prior, sigma * factor) < best
    grid = [(p, s) for p in np.geomspace(0.01, 100, 61) for s in np.geomspace(0.2, 3, 61)]
    grid_best = max(value(p, s) for p, s in grid)
    assert best >= grid_best - 1e-6
