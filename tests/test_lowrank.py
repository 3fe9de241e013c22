"""Low-rank Laplace: GGN products, top eigenpairs, and the posterior against dense references."""

import numpy as np
import pytest
from conftest import N_CLASSES, assert_posterior_matches_dense, make_mlp

import laplace_tf as lt


@pytest.fixture
def model():
    return make_mlp(4, N_CLASSES, hidden=(5,))


def test_rank_equal_to_the_parameter_count_recovers_the_full_laplace(model, classification_data):
    full = lt.Laplace(
        model, "classification", prior_precision=0.7, subset_of_weights="all", hessian_structure="full"
    ).fit(classification_data, verbose=False)
    low = lt.Laplace(
        model,
        "classification",
        hessian_structure="lowrank",
        rank=full.n_params,
        prior_precision=0.7,
        subset_of_weights="all",
    )
    low.fit(classification_data, batch_size=9, verbose=False)
    u, values = low.curvature.eigenvectors.numpy(), low.curvature.eigenvalues.numpy()
    np.testing.assert_allclose(u @ np.diag(values) @ u.T, full.curvature, atol=1e-9)
    np.testing.assert_allclose(low.log_marginal_likelihood(), full.log_marginal_likelihood(), rtol=1e-9)
    np.testing.assert_allclose(low.posterior.covariance, full.posterior.covariance, rtol=1e-7, atol=1e-10)
    x = classification_data[0][:4]
    np.testing.assert_allclose(low.predict(x), full.predict(x), rtol=1e-9)


def test_top_eigenpairs_match_the_dense_ggn(model, classification_data):
    full = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        classification_data, verbose=False
    )
    exact = np.sort(np.linalg.eigvalsh(full.curvature.numpy()))[::-1][:6]
    low = lt.Laplace(model, "classification", hessian_structure="lowrank", rank=6, subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    np.testing.assert_allclose(low.curvature.eigenvalues, exact, rtol=1e-6)
    u = low.curvature.eigenvectors.numpy()
    np.testing.assert_allclose(u.T @ u, np.eye(6), atol=1e-10)
    # residuals of a randomised method with 2 power iterations: small, limited by the spectral gaps
    np.testing.assert_allclose(full.curvature.numpy() @ u, u * exact, atol=1e-4 * exact[0])


@pytest.mark.parametrize("prior", [2.0, np.array([0.5, 1.0, 2.0, 4.0]), "per-parameter"])
def test_posterior_quantities_equal_the_dense_low_rank_precision(model, classification_data, prior):
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    if isinstance(prior, str):
        prior = np.linspace(0.5, 3.0, sum(sizes))
    la = lt.Laplace(
        model, "classification", hessian_structure="lowrank", rank=8, prior_precision=prior, subset_of_weights="all"
    )
    la.fit(classification_data, verbose=False)
    u, values = la.curvature.eigenvectors.numpy(), la.curvature.eigenvalues.numpy()
    per_parameter = np.broadcast_to(prior, (len(sizes),)) if np.ndim(prior) == 0 else prior
    per_parameter = np.repeat(per_parameter, sizes) if len(per_parameter) == len(sizes) else per_parameter
    precision = u @ np.diag(values) @ u.T + np.diag(per_parameter)
    assert_posterior_matches_dense(la, model, precision, classification_data[0][:5])


def test_lowrank_options_are_checked(model):
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 43\]"):
        lt.Laplace(model, "classification", hessian_structure="lowrank", rank=100, subset_of_weights="all")
    with pytest.raises(ValueError, match="curvature='ggn'"):
        lt.Laplace(
            model, "classification", hessian_structure="lowrank", rank=5, curvature="ef", subset_of_weights="all"
        )


def test_lowrank_tunes_every_prior_structure(model, classification_data):
    la = lt.Laplace(model, "classification", hessian_structure="lowrank", rank=10, subset_of_weights="all").fit(
        classification_data, verbose=False
    )
    scalar = float(la.log_marginal_likelihood(la.optimize_prior_precision()))
    layerwise = float(la.log_marginal_likelihood(la.optimize_prior_precision(prior_structure="layerwise")))
    diag = float(la.log_marginal_likelihood(la.optimize_prior_precision(prior_structure="diag")))
    assert layerwise >= scalar - 1e-9 and diag >= layerwise - 1e-9


@pytest.mark.parametrize("by_jacobians", [True, False])
def test_ggn_products_by_jacobians_and_by_passes_equal_the_dense_ggn(by_jacobians):
    """A convolutional network, where the Jacobians pay; both ways against J^T Lambda J formed densely."""
    import keras
    import tensorflow as tf
    from conftest import naive_jacobians, output_hessians_np

    from laplace_tf.networks.curvature import lowrank

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 1), dtype="float64"),
            keras.layers.Conv2D(2, 3, activation="tanh", dtype="float64"),
            keras.layers.Flatten(dtype="float64"),
            keras.layers.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 5, 5, 1)), np.eye(N_CLASSES)[rng.integers(0, N_CLASSES, 6)]
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="lowrank", rank=4)
    vectors = rng.normal(size=(la.n_params, 3))
    jacobians = naive_jacobians(model, x)
    hessians = output_hessians_np(model(x).numpy(), "classification")
    expected = np.einsum("nkp,nkl,nlq,qm->pm", jacobians, hessians, jacobians, vectors)
    products = lowrank.ggn_matmul(la.params, la.likelihood, by_jacobians=by_jacobians)
    loss, ggn_vectors = tf.function(products)(la.params.theta, tf.constant(x), tf.constant(y), tf.constant(vectors))
    np.testing.assert_allclose(ggn_vectors, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss, -np.sum(y * tf.nn.log_softmax(model(x)).numpy()), rtol=1e-12)


def test_the_jacobians_pay_where_each_weight_serves_many_multiplies():
    import keras

    from laplace_tf.networks.curvature.forward_cost import forward_multiplies
    from laplace_tf.networks.curvature.lowrank import jacobians_pay

    cnn = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    assert forward_multiplies(cnn) == 36 * 6 * 6 + 144 * 3  # the kernel at each of 6 x 6 patches, then the head
    mlp = make_mlp(64, 10, hidden=(50,))
    assert forward_multiplies(mlp) == 64 * 50 + 50 * 10
    cnn_params = sum(int(np.prod(v.shape)) for v in cnn.trainable_variables)
    assert jacobians_pay(cnn_params, 3, 110, forward_multiplies(cnn))  # 1,728 multiplies for 375 weights
    assert not jacobians_pay(3760, 10, 110, forward_multiplies(mlp))  # one multiply per weight, ten outputs
