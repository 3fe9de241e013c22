"""KroneckerEigenOperator against the dense matrix it stands for, built with NumPy, and the kron
posterior's views (operator powers, covariance, distribution) against the dense precision."""

import logging

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import multivariate_normal

import laplace_tf as lt
from laplace_tf.networks.posterior.kron_operator import KroneckerEigenOperator


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.linalg.qr(rng.normal(size=(n, n)))[0]


@pytest.mark.parametrize("diagonal_input", [False, True])
def test_kronecker_eigen_operator_equals_its_dense_matrix(diagonal_input):
    rng = np.random.default_rng(0)
    q_a, q_g = _orthogonal(rng, 3), _orthogonal(rng, 4)
    values = rng.uniform(0.5, 3.0, size=(3, 4))
    basis = np.kron(np.eye(3) if diagonal_input else q_a, q_g)
    dense = basis @ np.diag(values.ravel()) @ basis.T
    q_a = None if diagonal_input else tf.constant(q_a)
    op = KroneckerEigenOperator(q_a, tf.constant(q_g), tf.constant(values), is_positive_definite=True)
    x = rng.normal(size=(2, 12, 5))  # a batch of right-hand sides

    np.testing.assert_allclose(op.to_dense(), dense, atol=1e-12)
    np.testing.assert_allclose(op.matmul(x), dense @ x, atol=1e-12)
    np.testing.assert_allclose(op.matmul(np.swapaxes(x, -1, -2), adjoint_arg=True), dense @ x, atol=1e-12)
    np.testing.assert_allclose(op.matvec(x[:, :, 0]), x[:, :, 0] @ dense, atol=1e-12)
    np.testing.assert_allclose(op.solve(x), np.linalg.solve(dense, x), atol=1e-12)
    np.testing.assert_allclose(op.solvevec(x[0, :, 0]), np.linalg.solve(dense, x[0, :, 0]), atol=1e-12)
    np.testing.assert_allclose(op.inverse().to_dense(), np.linalg.inv(dense), atol=1e-12)
    np.testing.assert_allclose(op.log_abs_determinant(), np.linalg.slogdet(dense)[1], rtol=1e-12)
    np.testing.assert_allclose(op.determinant(), np.linalg.det(dense), rtol=1e-10)
    np.testing.assert_allclose(op.diag_part(), np.diag(dense), atol=1e-12)
    np.testing.assert_allclose(op.trace(), np.trace(dense), rtol=1e-12)
    np.testing.assert_allclose(np.sort(op.eigvals()), np.linalg.eigvalsh(dense), rtol=1e-12)
    np.testing.assert_allclose(op.cond(), np.linalg.cond(dense), rtol=1e-10)
    np.testing.assert_allclose(op.cholesky().to_dense(), np.linalg.cholesky(dense), atol=1e-12)
    assert op.shape == (12, 12) and op.adjoint() is op
    compiled = tf.function(lambda operator, v: operator.matvec(v))  # a composite tensor: passes into tf.function
    np.testing.assert_allclose(compiled(op, x[0, :, 0]), dense @ x[0, :, 0], atol=1e-12)


@pytest.fixture(scope="module")
def kron_laplace():
    """All weights of a small MLP, kron over float64, so the dense precision can be built exactly."""
    import keras

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    layers = [keras.layers.Dense(4, activation="tanh", dtype="float64"), keras.layers.Dense(3, dtype="float64")]
    model = keras.Sequential([keras.Input((3,)), *layers])
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron", prior_precision=0.7)
    return la.fit((x, y), verbose=False)


def test_kron_posterior_views_are_powers_of_its_dense_precision(kron_laplace, caplog):
    posterior = kron_laplace.posterior
    assert isinstance(posterior, lt.KronPosterior)
    precision = posterior.precision_operator().to_dense().numpy()
    covariance = np.linalg.inv(precision)
    np.testing.assert_allclose(posterior.covariance, covariance, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(posterior.variance, np.diag(covariance), rtol=1e-9)
    eigenvalues, vectors = np.linalg.eigh(precision)
    root = vectors @ np.diag(eigenvalues**-0.5) @ vectors.T
    np.testing.assert_allclose(posterior.operator(power=-0.5).to_dense(), root, rtol=1e-8, atol=1e-12)

    points = posterior.sample(4, seed=0).numpy()
    reference = multivariate_normal(posterior.mean.numpy(), covariance)
    with caplog.at_level(logging.WARNING):  # no dense fallback (TensorFlow warns of its determinant's)
        log_prob = posterior.distribution().log_prob(points)
    np.testing.assert_allclose(log_prob, reference.logpdf(points), rtol=1e-9)
    assert not [r for r in caplog.records if "slow" in r.getMessage()]


def test_kron_posterior_distribution_passes_into_a_compiled_function(kron_laplace):
    distribution = kron_laplace.posterior.distribution()
    point = kron_laplace.mean + 0.1
    compiled = tf.function(lambda d, theta: d.log_prob(theta))
    np.testing.assert_allclose(compiled(distribution, point), distribution.log_prob(point), rtol=1e-12)
