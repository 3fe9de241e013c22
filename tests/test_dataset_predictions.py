"""Predictions on a tf.data.Dataset equal those on the same inputs as arrays (one pass, batch by
batch), and a dataset's mistakes are refused before it is read."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, make_mlp

import laplace_tf as lt

RNG = np.random.default_rng(5)
X = RNG.normal(size=(45, 4))
Y = RNG.integers(0, N_CLASSES, size=45)
Y_REGRESSION = RNG.normal(size=(45, 2))


@pytest.fixture(scope="module")
def classifier():
    return lt.Laplace(make_mlp(4, N_CLASSES), "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (X, Y), verbose=False
    )


@pytest.fixture(scope="module")
def regressor():
    model = make_mlp(4, 2, seed=1)
    return lt.Laplace(model, "regression", hessian_structure="diag", subset_of_weights="all").fit(
        (X, Y_REGRESSION), verbose=False
    )


def _pairs(x, y, batch=16):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_predictions_on_a_dataset_equal_those_on_its_arrays(classifier, regressor):
    inputs_only = tf.data.Dataset.from_tensor_slices(X).batch(10)
    for data in (_pairs(X, Y), inputs_only):
        np.testing.assert_allclose(classifier.predict(data, verbose=False), classifier.predict(X, verbose=False))
    for got, expected in zip(
        classifier.glm_output_distribution(_pairs(X, Y), verbose=False),
        classifier.glm_output_distribution(X, verbose=False),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected)
    # the "nn" predictive draws the same parameters for every batch, as for the arrays at once
    np.testing.assert_allclose(
        classifier.predict(_pairs(X, Y), pred_type="nn", n_samples=7, seed=3, verbose=False),
        classifier.predict(X, pred_type="nn", n_samples=7, seed=3, verbose=False),
    )
    samples = classifier.predictive_samples(_pairs(X, Y), n_samples=5, pred_type="nn", seed=4, verbose=False)
    assert samples.shape == (5, len(X), N_CLASSES)
    np.testing.assert_allclose(samples, classifier.predictive_samples(X, 5, "nn", seed=4, verbose=False))
    np.testing.assert_allclose(classifier.map_outputs(_pairs(X, Y)), classifier.model(X))
    for got, expected in zip(
        regressor.predict(_pairs(X, Y_REGRESSION), diagonal_output=False, verbose=False),
        regressor.predict(X, diagonal_output=False, verbose=False),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected)
    distribution = regressor.predictive_distribution(_pairs(X, Y_REGRESSION))
    np.testing.assert_allclose(
        distribution.log_prob(Y_REGRESSION), regressor.predictive_distribution(X).log_prob(Y_REGRESSION)
    )


def test_evaluate_reads_a_reshuffling_dataset_once(classifier, regressor):
    """A dataset reshuffled on every pass still pairs each prediction with its own target."""
    for la, y in ((classifier, Y), (regressor, Y_REGRESSION)):
        shuffled = tf.data.Dataset.from_tensor_slices((X, y)).shuffle(len(X), reshuffle_each_iteration=True).batch(8)
        ood = tf.data.Dataset.from_tensor_slices(X + 6).batch(20)
        from_dataset = la.evaluate(shuffled, x_ood=ood).to_dict()
        from_arrays = la.evaluate(X, y, x_ood=X + 6).to_dict()
        assert from_dataset["n_examples"] == len(X) and from_dataset["n_ood"] == len(X)
        for column, metrics in from_arrays["metrics"].items():
            for name, value in metrics.items():
                np.testing.assert_allclose(from_dataset["metrics"][column][name], value, rtol=1e-9, err_msg=name)


def test_a_reward_models_pairs_and_items_come_as_datasets_too():
    keras.utils.set_random_seed(0)
    reward = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    pairs, preferred = RNG.normal(size=(30, 2, 3)), RNG.integers(0, 2, size=30)
    la = lt.Laplace(reward, "reward_modeling", hessian_structure="kron", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    # float32 batches of 16 and of 30 round differently (by up to about 1e-7 relative)
    from_batches = la.predict(_pairs(pairs, preferred), verbose=False)
    np.testing.assert_allclose(from_batches, la.predict(pairs, verbose=False), rtol=1e-6)
    items = tf.data.Dataset.from_tensor_slices(pairs[:, 0]).batch(7)
    for got, expected in zip(la.predict(items, verbose=False), la.predict(pairs[:, 0], verbose=False), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    from_dataset, from_arrays = la.evaluate(_pairs(pairs, preferred)).metrics, la.evaluate(pairs, preferred).metrics
    assert from_dataset.keys() == from_arrays.keys()
    for column, metrics in from_arrays.items():
        assert from_dataset[column] == pytest.approx(metrics, rel=1e-6)


def test_dataset_mistakes_are_refused_before_reading_it(classifier, regressor):
    with pytest.raises(ValueError, match="joint=True needs all inputs at once"):
        regressor.predict(_pairs(X, Y_REGRESSION), joint=True)
    with pytest.raises(ValueError, match=r"single examples.*dataset.batch"):
        classifier.predict(tf.data.Dataset.from_tensor_slices(X))
    with pytest.raises(ValueError, match="repeats forever"):
        classifier.predict(_pairs(X, Y).repeat())
    with pytest.raises(ValueError, match="empty"):
        classifier.predict(_pairs(X[:0], Y[:0]))
    with pytest.raises(ValueError, match="leave y out"):
        classifier.evaluate(_pairs(X, Y), Y)
    with pytest.raises(ValueError, match=r"no targets; evaluate needs a dataset of \(x, y\)"):
        classifier.evaluate(tf.data.Dataset.from_tensor_slices(X).batch(9))
    with pytest.raises(ValueError, match="y \\(the test targets\\) is missing"):
        classifier.evaluate(X)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        classifier.evaluate(_pairs(X, Y + 1))
    with pytest.raises(TypeError, match="takes arrays x and y"):
        classifier.to_inference_data(_pairs(X, Y), Y)
