"""Shared fixtures and independent reference computations for the tests.

The references never go through laplace-tf: they loop over examples, call the Keras model
directly on its own variables, and do the algebra in NumPy.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

N_CLASSES = 3


def make_mlp(n_in: int, n_out: int, hidden: tuple[int, ...] = (5,), dtype: str = "float64", seed: int = 0):
    """A small tanh MLP with random (not trained) weights, built."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((n_in,), dtype=dtype)]
    layers += [keras.layers.Dense(h, activation="tanh", dtype=dtype) for h in hidden]
    layers += [keras.layers.Dense(n_out, dtype=dtype)]
    return keras.Sequential(layers)


class SubclassedMLP(keras.Model):
    """A subclassed 4-5-3 tanh MLP whose call takes no `training` argument, as users often write."""

    def __init__(self):
        super().__init__(dtype="float64")
        self.hidden = keras.layers.Dense(5, activation="tanh", dtype="float64")
        self.out = keras.layers.Dense(N_CLASSES, dtype="float64")

    def call(self, x):
        return self.out(self.hidden(x))


def subclassed_copy(reference) -> SubclassedMLP:
    """A built SubclassedMLP with the weights of a 4-5-3 Sequential/functional model."""
    net = SubclassedMLP()
    net(np.zeros((1, 4)))
    for target, source in zip(net.trainable_variables, reference.trainable_variables, strict=True):
        target.assign(source.value)
    return net


def flat_weights(model) -> np.ndarray:
    return np.concatenate([np.asarray(v.value).ravel() for v in model.trainable_variables])


def set_flat_weights(model, theta: np.ndarray) -> None:
    start = 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        v.assign(np.reshape(theta[start : start + size], v.shape))
        start += size


def naive_jacobians(model, x) -> np.ndarray:
    """(N, K, P): one example at a time, through model.__call__ and its variables.

    ``x`` is an array or a structure of arrays (a model with several inputs).
    """
    rows = []
    n_examples = len(tf.nest.flatten(x)[0])
    for n in range(n_examples):
        x_n = tf.nest.map_structure(lambda a, n=n: a[n : n + 1], x)
        with tf.GradientTape(persistent=True) as tape:
            f = model(x_n, training=False)[0]
        blocks = tape.jacobian(f, model.trainable_variables, experimental_use_pfor=False)
        rows.append(np.concatenate([np.reshape(np.asarray(b, np.float64), (f.shape[0], -1)) for b in blocks], axis=1))
    return np.stack(rows)


def naive_gradients(model, x: np.ndarray, y: np.ndarray, loss_fn) -> np.ndarray:
    """(N, P) per-example gradients of loss_fn(f, y) (f of shape (1, K)), one at a time."""
    rows = []
    for x_n, y_n in zip(x, y, strict=True):
        with tf.GradientTape() as tape:
            loss = loss_fn(model(x_n[None]), y_n[None])
        grads = tape.gradient(loss, model.trainable_variables)
        rows.append(np.concatenate([np.ravel(g) for g in grads]))
    return np.stack(rows)


def softmax_np(f: np.ndarray) -> np.ndarray:
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def output_hessians_np(f: np.ndarray, likelihood: str) -> np.ndarray:
    """(N, K, K) Hessians of the per-example loss in the outputs, by the textbook formulas."""
    if likelihood == "classification":
        p = softmax_np(f)
        return np.stack([np.diag(p_n) - np.outer(p_n, p_n) for p_n in p])
    if likelihood in ("binary", "multilabel"):
        p = 1 / (1 + np.exp(-f))
        return np.stack([np.diag(p_n * (1 - p_n)) for p_n in p])
    return np.stack([np.eye(f.shape[1])] * len(f))


def assert_posterior_matches_dense(la, model, precision: np.ndarray, x: np.ndarray) -> None:
    """Every posterior quantity of a fitted Laplace equals the one from its dense precision matrix."""
    from scipy import stats

    covariance = np.linalg.inv(precision)
    posterior = la.posterior
    np.testing.assert_allclose(posterior.log_det_precision, np.linalg.slogdet(precision)[1], rtol=1e-10)
    np.testing.assert_allclose(posterior.covariance, covariance, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(posterior.variance, np.diag(covariance), rtol=1e-8)
    np.testing.assert_allclose(posterior.precision_operator().to_dense(), precision, rtol=1e-8, atol=1e-10)
    points = la.mean.numpy() + 0.1 * np.random.default_rng(0).normal(size=(3, la.n_params))
    expected = stats.multivariate_normal(la.mean.numpy(), covariance).logpdf(points)
    np.testing.assert_allclose(posterior.log_prob(points), expected, rtol=1e-8)
    np.testing.assert_allclose(posterior.distribution().log_prob(points), expected, rtol=1e-8)
    jac = naive_jacobians(model, x)
    expected_variance = np.einsum("nkp,pq,nlq->nkl", jac, covariance, jac)
    np.testing.assert_allclose(la.glm_output_distribution(x)[1], expected_variance, rtol=1e-8, atol=1e-12)
    n = 40000
    draws = la.sample(n, seed=1).numpy()
    std = np.sqrt(np.diag(covariance))
    assert np.all(np.abs(draws.mean(axis=0) - la.mean.numpy()) < 5 * std / np.sqrt(n))
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.05 * std.max() ** 2)


def kron_and_full_curvature(model, data):
    """A kron Laplace over every weight fitted on ``data``, and the full GGN there as an array."""
    import laplace_tf as lt

    kron = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all")
    full = lt.Laplace(model, "classification", hessian_structure="full", subset_of_weights="all")
    return kron.fit(data, verbose=False), full.fit(data, verbose=False).curvature.numpy()


def cross_entropy(f, y):
    return keras.losses.sparse_categorical_crossentropy(y, f, from_logits=True)[0]


@pytest.fixture
def classification_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(23, 4))
    y = rng.integers(0, N_CLASSES, size=23)
    return x, y


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(19, 3))
    y = np.stack([np.sin(x[:, 0]) + 0.1 * rng.normal(size=19), x[:, 1] * x[:, 2]], axis=1)
    return x, y
