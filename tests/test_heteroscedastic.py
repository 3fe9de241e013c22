"""likelihood="heteroscedastic": the natural-parameter Gaussian against scipy and autodiff, its
curvature against dense references, and its predictive against a dense delta method."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import naive_gradients, naive_jacobians
from scipy import stats

import laplace_tf as lt
from laplace_tf.networks.heteroscedastic import Heteroscedastic, mean_and_variance


def fisher_np(f: np.ndarray) -> np.ndarray:
    """(N, 2K, 2K): the expected Hessian of the loss in (a, b), by the textbook formulas."""
    k = f.shape[1] // 2
    a, b = f[:, :k], f[:, k:]
    blocks = np.zeros((len(f), 2 * k, 2 * k))
    for j in range(k):
        blocks[:, j, j] = np.exp(-b[:, j])
        blocks[:, j, k + j] = blocks[:, k + j, j] = -a[:, j] * np.exp(-b[:, j])
        blocks[:, k + j, k + j] = 0.5 + a[:, j] ** 2 * np.exp(-b[:, j])
    return blocks


def test_loss_gradient_and_curvature_of_the_likelihood():
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    likelihood = Heteroscedastic()
    mean, variance = (t.numpy() for t in mean_and_variance(tf.constant(f)))
    expected = -stats.norm.logpdf(y, mean, np.sqrt(variance)).sum(axis=1)
    np.testing.assert_allclose(likelihood.loss(tf.constant(f), tf.constant(y)), expected, rtol=1e-12)

    def hessian_at(targets):
        outputs = tf.Variable(f)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_sum(likelihood.loss(outputs, tf.constant(targets)))
            gradient = inner.gradient(loss, outputs)
        return gradient.numpy(), outer.batch_jacobian(gradient, outputs).numpy()

    gradient, _ = hessian_at(y)
    np.testing.assert_allclose(likelihood.loss_gradient(tf.constant(f), tf.constant(y)), gradient, rtol=1e-12)
    # the Hessian is affine in (y, y^2): its expectation under N(mean, variance) from three targets
    h0, h1, h_minus = (hessian_at(np.full_like(y, t))[1] for t in (0.0, 1.0, -1.0))
    linear, square = (h1 - h_minus) / 2, (h1 + h_minus) / 2 - h0
    y_mean = np.concatenate([mean, mean], axis=1)[:, :, None]  # each output's target moments
    y_square = np.concatenate([mean**2 + variance] * 2, axis=1)[:, :, None]
    # output j's row depends on target j mod K: place the moments per row, then check symmetry
    expected_fisher = h0 + linear * y_mean + square * y_square
    np.testing.assert_allclose(likelihood.output_hessian(tf.constant(f)), expected_fisher, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(likelihood.output_hessian(tf.constant(f)), fisher_np(f), rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(fisher_np(f)) > 0)


@pytest.fixture(scope="module")
def noisy_data():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 4, size=(80, 1))
    return x, np.sin(x) + (0.05 + 0.2 * x) * rng.normal(size=(80, 1))


@pytest.fixture(scope="module")
def trained(noisy_data):
    x, y = noisy_data
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(8, activation="tanh", dtype="float64"),
            keras.layers.Dense(2, dtype="float64"),
        ]
    )
    likelihood = Heteroscedastic()
    model.compile(keras.optimizers.Adam(2e-2), lambda t, f: likelihood.loss(f, tf.cast(t, f.dtype)))
    model.fit(x, y, epochs=150, batch_size=40, verbose=0)
    return model


def test_ggn_and_empirical_fisher_equal_dense_references(trained, noisy_data):
    x, y = noisy_data
    la = lt.Laplace(trained, "heteroscedastic", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), batch_size=30, verbose=False
    )
    jacobians = naive_jacobians(trained, x)
    expected = np.einsum("nkp,nkl,nlq->pq", jacobians, fisher_np(np.asarray(trained(x))), jacobians)
    np.testing.assert_allclose(la.curvature, expected, rtol=1e-9, atol=1e-11)
    ef = lt.Laplace(trained, "heteroscedastic", curvature="ef", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    )
    gradients = naive_gradients(trained, x, y, lambda f, t: Heteroscedastic().loss(f, tf.cast(t, f.dtype))[0])
    np.testing.assert_allclose(ef.curvature, gradients.T @ gradients, rtol=1e-9, atol=1e-11)
    kron = lt.Laplace(trained, "heteroscedastic", hessian_structure="kron", subset_of_weights="all").fit(
        (x[:1], y[:1]), verbose=False
    )
    one = np.einsum("nkp,nkl,nlq->pq", jacobians[:1], fisher_np(np.asarray(trained(x[:1]))), jacobians[:1])
    kernel = kron.curvature.blocks[0]  # one example: A (x) G is exact
    dense = np.kron(kernel.input_factor.numpy(), kernel.output_factor.numpy())
    np.testing.assert_allclose(dense, one[:8, :8], rtol=1e-9, atol=1e-12)


def test_glm_predictive_is_the_delta_method_on_the_dense_posterior(trained, noisy_data):
    x, y = noisy_data
    la = lt.Laplace(
        trained, "heteroscedastic", prior_precision=0.5, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    points = np.array([[0.3], [2.0], [3.8]])
    mean, epistemic, aleatoric = (t.numpy()[:, 0] for t in la.predict(points))
    covariance = la.posterior.covariance.numpy()
    f = np.asarray(trained(points))
    jacobians = naive_jacobians(trained, points)  # (N, 2, P): rows a, b
    mu_jacobian = np.exp(-f[:, 1:2]) * jacobians[:, 0] - (f[:, :1] * np.exp(-f[:, 1:2])) * jacobians[:, 1]
    np.testing.assert_allclose(mean, f[:, 0] * np.exp(-f[:, 1]), rtol=1e-12)
    np.testing.assert_allclose(epistemic, np.einsum("np,pq,nq->n", mu_jacobian, covariance, mu_jacobian), rtol=1e-8)
    b_variance = np.einsum("np,pq,nq->n", jacobians[:, 1], covariance, jacobians[:, 1])
    np.testing.assert_allclose(aleatoric, np.exp(-f[:, 1] + b_variance / 2), rtol=1e-8)
    assert aleatoric[2] > 2 * aleatoric[0]  # the noise grows with x, as in the data
    distribution = la.predictive_distribution(points)
    np.testing.assert_allclose(
        distribution.log_prob(np.zeros((3, 1))), stats.norm.logpdf(0, mean, np.sqrt(epistemic + aleatoric)), rtol=1e-10
    )


def test_sampled_predictive_and_tuning(trained, noisy_data):
    x, y = noisy_data
    la = lt.Laplace(trained, "heteroscedastic", hessian_structure="diag", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    tuned = float(la.optimize_prior_precision())
    around = [float(la.log_marginal_likelihood(tuned * np.exp(s))) for s in (-1e-4, 1e-4)]
    assert abs(around[1] - around[0]) / 2e-4 < 1e-3
    mean, epistemic, aleatoric = la.predict(x[:4], pred_type="nn", n_samples=30, seed=2)
    draws = la.sample(30, seed=2).numpy()
    outputs = np.stack([la.params.apply(tf.constant(t), x[:4]).numpy() for t in draws])
    mu, noise = outputs[..., 0] * np.exp(-outputs[..., 1]), np.exp(-outputs[..., 1])
    np.testing.assert_allclose(mean[:, 0], mu.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(epistemic[:, 0], mu.var(axis=0), rtol=1e-8)
    np.testing.assert_allclose(aleatoric[:, 0], noise.mean(axis=0), rtol=1e-10)
    report = la.evaluate(x, y)
    assert report.task == "regression" and 0 < report.metrics["Laplace"]["coverage_95"] <= 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda m, x, y: lt.Laplace(
                keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)]),
                "heteroscedastic",
                subset_of_weights="all",
                hessian_structure="full",
            ).fit((x, y)),
            "two outputs per target",
        ),
        (
            lambda m, x, y: lt.Laplace(m, "heteroscedastic", subset_of_weights="all", hessian_structure="full").fit(
                (x, np.hstack([y, y]))
            ),
            r"shape \(N, 1\)",
        ),
        (
            lambda m, x, y: lt.Laplace(
                m, "heteroscedastic", sigma_noise=0.5, subset_of_weights="all", hessian_structure="full"
            ),
            "regression' only",
        ),
    ],
)
def test_mistakes_get_clear_errors(trained, noisy_data, make, message):
    with pytest.raises(ValueError, match=message):
        make(trained, *noisy_data)
