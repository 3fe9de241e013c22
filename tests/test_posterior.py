"""Posterior quantities against dense NumPy references (classification, full and diag)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import N_CLASSES, make_mlp, naive_jacobians

import laplace_tf as lt

tfd = tfp.distributions


@pytest.fixture(params=["full", "diag"])
def fitted(request, classification_data):
    model = make_mlp(4, N_CLASSES)
    prior = np.linspace(0.5, 2.0, len(model.trainable_variables))  # one value per variable
    la = lt.Laplace(
        model, "classification", hessian_structure=request.param, prior_precision=prior, subset_of_weights="all"
    )
    la.fit(classification_data, verbose=False)
    curvature = la.curvature.numpy()
    curvature = curvature if request.param == "full" else np.diag(curvature)
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    precision = curvature + np.diag(np.repeat(prior, sizes))
    return la, model, precision, np.repeat(prior, sizes)


def test_log_marginal_likelihood_equals_dense_formula(fitted, classification_data):
    la, model, precision, prior = fitted
    x, y = classification_data
    logits = np.asarray(model(x))
    log_lik = np.sum(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(axis=1)))
    theta = la.mean.numpy()
    expected = log_lik - 0.5 * (np.linalg.slogdet(precision)[1] - np.sum(np.log(prior)) + np.sum(prior * theta**2))
    np.testing.assert_allclose(la.log_marginal_likelihood(), expected, rtol=1e-10)


def test_covariance_and_log_prob_equal_a_dense_gaussian(fitted):
    la, _, precision, _ = fitted
    covariance = np.linalg.inv(precision)
    np.testing.assert_allclose(la.posterior.covariance, covariance, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(la.posterior.variance, np.diag(covariance), rtol=1e-8)
    reference = tfd.MultivariateNormalTriL(la.mean, tf.constant(np.linalg.cholesky(covariance)))
    points = la.mean.numpy() + np.random.default_rng(0).normal(size=(5, la.n_params)) * 0.1
    np.testing.assert_allclose(la.posterior.log_prob(points), reference.log_prob(points), rtol=1e-9)
    np.testing.assert_allclose(la.posterior.distribution().log_prob(points), reference.log_prob(points), rtol=1e-9)


def test_samples_have_the_posterior_moments_and_are_reproducible(fitted):
    la, _, precision, _ = fitted
    n = 40000
    draws = la.sample(n, seed=3).numpy()
    assert draws.shape == (n, la.n_params)
    covariance = np.linalg.inv(precision)
    std = np.sqrt(np.diag(covariance))
    # the sample mean is within 5 standard errors; the sample covariance within a few percent
    assert np.all(np.abs(draws.mean(axis=0) - la.mean.numpy()) < 5 * std / np.sqrt(n))
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.05 * std.max() ** 2)
    np.testing.assert_array_equal(la.sample(4, seed=3), la.sample(4, seed=3))
    assert not np.allclose(la.sample(4, seed=3), la.sample(4, seed=4))


def test_functional_variance_equals_naive_j_sigma_jt(fitted, classification_data):
    la, model, precision, _ = fitted
    x = classification_data[0][:6]
    jac = naive_jacobians(model, x)
    expected = np.einsum("nkp,pq,nlq->nkl", jac, np.linalg.inv(precision), jac)
    _, f_var = la.glm_output_distribution(x)
    np.testing.assert_allclose(f_var, expected, rtol=1e-8, atol=1e-12)


def test_changing_the_prior_rebuilds_the_posterior(fitted):
    la, _, precision, prior = fitted
    la.prior_precision = 10.0
    expected = precision - np.diag(prior) + 10.0 * np.eye(la.n_params)
    np.testing.assert_allclose(la.posterior.covariance, np.linalg.inv(expected), rtol=1e-8, atol=1e-12)


def test_indefinite_precision_is_reported(classification_data):
    model = make_mlp(4, N_CLASSES, hidden=(16,), seed=1)
    la = lt.Laplace(
        model,
        "classification",
        curvature="hessian",
        prior_precision=1e-4,
        subset_of_weights="all",
        hessian_structure="full",
    )
    la.fit(classification_data, verbose=False)
    with pytest.raises(lt.NotPositiveDefiniteError, match=r"not positive definite.*curvature='ggn'"):
        la.posterior  # noqa: B018
    diag = lt.Laplace(
        model,
        "classification",
        hessian_structure="diag",
        curvature="hessian",
        prior_precision=1e-4,
        subset_of_weights="all",
    )
    diag.fit(classification_data, verbose=False)
    if np.all(diag.curvature.numpy() + 1e-4 > 0):
        pytest.fail("the test needs an untrained model with some negative Hessian diagonal")
    with pytest.raises(lt.NotPositiveDefiniteError, match="non-positive"):
        diag.posterior  # noqa: B018


def test_round_off_negative_eigenvalues_of_a_float32_ggn_are_handled():
    model = make_mlp(4, N_CLASSES, hidden=(16,), dtype="float32", seed=2)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 4)).astype("float32"), np.array([0, 1, 2, 0, 1])
    la = lt.Laplace(
        model, "classification", prior_precision=1e-6, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    curvature = la.curvature.numpy().astype(np.float64)  # rank <= 10 of 115: mostly round-off
    values, vectors = np.linalg.eigh(curvature)
    expected = vectors @ np.diag(np.maximum(values, 0)) @ vectors.T + 1e-6 * np.eye(la.n_params)
    cholesky = la.posterior.cholesky.numpy().astype(np.float64)
    assert np.all(np.diag(cholesky) > 0) and np.allclose(cholesky, np.tril(cholesky))
    np.testing.assert_allclose(cholesky @ cholesky.T, expected, atol=1e-5 * values.max())
    # ~100 eigenvalues sit at float32 round-off (about the prior itself), so each of their log terms
    # is uncertain by O(1): the log-determinant agrees only to that noise floor
    np.testing.assert_allclose(la.posterior.log_det_precision, np.linalg.slogdet(expected)[1], rtol=1e-2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_factors_of_a_constant_posterior_equal_tensorflows(dtype):
    rng = np.random.default_rng(4)
    root = rng.normal(size=(60, 60))
    precision = tf.constant(root @ root.T / 60 + np.eye(60), dtype)
    mean = tf.zeros([60], dtype)
    host, graph = lt.FullPosterior(mean, precision, constant=True), lt.FullPosterior(mean, precision)
    rtol = 1e-4 if dtype == "float32" else 1e-12
    # formed in LAPACK's buffer from its terms: s H + diag(lambda), the precision itself only when asked for
    prior = tf.constant(rng.uniform(0.5, 2.0, size=60), dtype)
    curvature = (precision - tf.linalg.diag(prior)) / 3.0
    summed = lt.FullPosterior.from_curvature(mean, curvature, tf.constant(3.0, dtype), prior, constant=True)
    assert summed._precision is None
    np.testing.assert_allclose(summed.cholesky, graph.cholesky, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(summed.precision, precision, rtol=rtol, atol=rtol)
    covariance = np.linalg.inv(precision.numpy().astype(np.float64))
    np.testing.assert_allclose(host.cholesky, graph.cholesky, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(np.triu(host.cholesky.numpy(), 1), 0.0)
    factor = host.covariance_factor.numpy().astype(np.float64)
    np.testing.assert_allclose(factor, graph.covariance_factor, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(factor @ factor.T, covariance, rtol=10 * rtol, atol=10 * rtol)
    np.testing.assert_allclose(host.variance, np.diag(covariance), rtol=10 * rtol)
    np.testing.assert_allclose(host.covariance, covariance, rtol=10 * rtol, atol=10 * rtol)
    assert host.cholesky.dtype == host.covariance_factor.dtype == precision.dtype
    jacobians = tf.constant(rng.normal(size=(4, 3, 60)), dtype)
    expected = np.einsum("bkp,pq,blq->bkl", jacobians.numpy(), covariance, jacobians.numpy())
    fresh, whitened = lt.FullPosterior(mean, precision), lt.FullPosterior(mean, precision, constant=True)
    before = jacobians.numpy()
    # TensorFlow's triangular solves, then S's products; BLAS's in-place solves on a copy of the rows
    for posterior, rows in [(fresh, None), (fresh, 60), (whitened, 60), (host, None)]:
        np.testing.assert_allclose(posterior.functional_variance(jacobians, rows), expected, rtol=100 * rtol)
    assert fresh.has_covariance_factor and not whitened.has_covariance_factor
    np.testing.assert_array_equal(jacobians, before)
    shift = np.linalg.eigvalsh(precision.numpy().astype(np.float64))[0] + 0.5
    with pytest.raises(lt.NotPositiveDefiniteError, match=r"smallest eigenvalue -0\.5\)"):
        lt.FullPosterior(mean, precision - tf.cast(shift, dtype) * tf.eye(60, dtype=dtype), constant=True)
    overflowed = precision.numpy()
    overflowed[40, 3] = overflowed[3, 40] = np.inf
    for constant in (True, False):
        with pytest.raises(lt.NotPositiveDefiniteError, match="contains NaN or inf: the curvature overflowed"):
            lt.FullPosterior(mean, tf.constant(overflowed), constant=constant)


@pytest.mark.parametrize("fitted", ["full"], indirect=True)
def test_only_the_cached_posterior_is_factored_without_gradients(fitted):
    la, _, precision, _ = fitted
    assert la.posterior.constant
    prior = tf.Variable(2.0, dtype=tf.float64)
    with tf.GradientTape() as tape:
        log_det = la._build_posterior(prior * tf.ones(la.n_params, tf.float64), la.sigma_noise).log_det_precision
    # d/dlambda log det(H + lambda I) = tr((H + lambda I)^{-1})
    curvature = precision - np.diag(np.diag(precision) - np.diag(la.curvature.numpy()))
    expected = np.trace(np.linalg.inv(curvature + 2.0 * np.eye(la.n_params)))
    np.testing.assert_allclose(tape.gradient(log_det, prior), expected, rtol=1e-8)


def test_host_results_share_aligned_buffers_and_copy_others():
    from laplace_tf.networks.posterior import host_lapack

    values = np.arange(12.0).reshape(3, 4)
    aligned = host_lapack._aligned_empty((3, 4), np.float64)
    np.copyto(aligned, values)
    shared = host_lapack._shared_tensor(aligned)
    aligned[0, 0] = -1.0  # the tensor reads the buffer, which it keeps alive
    del aligned
    np.testing.assert_array_equal(shared, np.where(values == 0.0, -1.0, values))
    raw = host_lapack._aligned_empty((13,), np.float64)
    misaligned = raw[1:].reshape(3, 4)  # 8 bytes past a 64-byte boundary: TensorFlow needs a copy
    np.copyto(misaligned, values)
    copied = host_lapack._shared_tensor(misaligned)
    misaligned[0, 0] = -1.0
    np.testing.assert_array_equal(copied, values)
    np.testing.assert_array_equal(host_lapack._shared_tensor(values.T), values.T)  # column-major: a copy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_eigendecompositions_equal_tensorflows(dtype):
    from laplace_tf.networks.posterior import host_lapack

    root = np.random.default_rng(5).normal(size=(50, 80))
    matrix = tf.constant(root @ root.T / 80, dtype)
    values, vectors = host_lapack.eigh(matrix)
    reference = tf.linalg.eigvalsh(matrix)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    assert values.dtype == vectors.dtype == matrix.dtype
    np.testing.assert_allclose(values, reference, atol=tolerance * float(reference[-1]))
    np.testing.assert_allclose(host_lapack.eigvalsh(matrix), reference, atol=tolerance * float(reference[-1]))
    np.testing.assert_allclose(vectors.numpy().T @ vectors.numpy(), np.eye(50), atol=10 * tolerance)
    np.testing.assert_allclose((vectors * values) @ tf.transpose(vectors), matrix, atol=10 * tolerance)
