"""Reward modeling (Bradley-Terry): curvature, evidence and both predictives against hand-built references.

The references: the GGN summed by hand from each item's Jacobian (through the Keras model
itself) and the two-class softmax's output Hessian; for kron, a classification Laplace of a
"twin" model that scores a pair as a length-2 sequence (a Dense layer on (B, 2, D) inputs), the
same function reached by another path through K-FAC.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_mlp, naive_jacobians, output_hessians_np, softmax_np

import laplace_tf as lt

D, HIDDEN, N_PAIRS = 3, 4, 24


@pytest.fixture(scope="module")
def reward_model():
    return make_mlp(D, 1, hidden=(HIDDEN,), seed=3)


@pytest.fixture(scope="module")
def preferences(reward_model):
    rng = np.random.default_rng(5)
    pairs = rng.normal(size=(N_PAIRS, 2, D))
    rewards = reward_model(pairs.reshape(-1, D)).numpy().reshape(-1, 2)
    preferred = (rng.uniform(size=N_PAIRS) < softmax_np(rewards)[:, 1]).astype(int)
    return pairs, preferred


def dense_reference(model, pairs, preferred, prior):
    """GGN, evidence and posterior covariance of the pair classification, by hand."""
    item_jacobians = naive_jacobians(model, pairs.reshape(-1, D))[:, 0]  # (2N, P)
    jacobians = item_jacobians.reshape(len(pairs), 2, -1)  # (N, 2, P)
    rewards = model(pairs.reshape(-1, D)).numpy().reshape(-1, 2)
    hessians = output_hessians_np(rewards, "classification")
    ggn = np.einsum("nkp,nkl,nlq->pq", jacobians, hessians, jacobians)
    log_likelihood = np.sum(np.log(softmax_np(rewards)[np.arange(len(pairs)), preferred]))
    theta = np.concatenate([np.ravel(v.value) for v in model.trainable_variables])
    precision = ggn + prior * np.eye(len(theta))
    log_det_ratio = np.linalg.slogdet(precision)[1] - len(theta) * np.log(prior)
    evidence = log_likelihood - 0.5 * (log_det_ratio + prior * theta @ theta)
    return ggn, evidence, np.linalg.inv(precision), rewards


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_curvature_evidence_and_predictives_equal_the_hand_built_pair_classification(
    reward_model, preferences, structure
):
    pairs, preferred = preferences
    prior = 0.7
    ggn, evidence, covariance, rewards = dense_reference(reward_model, pairs, preferred, prior)
    la = lt.Laplace(
        reward_model, "reward_modeling", hessian_structure=structure, prior_precision=prior, subset_of_weights="all"
    )
    la.fit((pairs, preferred), batch_size=10, verbose=False)
    if structure == "diag":
        np.testing.assert_allclose(la.curvature, np.diag(ggn), rtol=1e-10, atol=1e-14)
        covariance = np.diag(1 / (np.diag(ggn) + prior))
        evidence = evidence + 0.5 * (np.linalg.slogdet(ggn + prior * np.eye(len(ggn)))[1])
        evidence -= 0.5 * np.sum(np.log(np.diag(ggn) + prior))
    else:
        np.testing.assert_allclose(la.curvature, ggn, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(la.log_marginal_likelihood(), evidence, rtol=1e-10)

    items = np.random.default_rng(9).normal(size=(7, D))
    item_jacobians = naive_jacobians(reward_model, items)[:, 0]
    mean, variance = la.predict(items)
    assert mean.shape == variance.shape == (7, 1)
    np.testing.assert_allclose(mean[:, 0], reward_model(items).numpy()[:, 0], rtol=1e-12)
    np.testing.assert_allclose(
        variance[:, 0], np.einsum("np,pq,nq->n", item_jacobians, covariance, item_jacobians), rtol=1e-9
    )
    pair_jacobians = naive_jacobians(reward_model, pairs.reshape(-1, D))[:, 0].reshape(N_PAIRS, 2, -1)
    pair_covariance = np.einsum("nkp,pq,nlq->nkl", pair_jacobians, covariance, pair_jacobians)
    kappa = 1 / np.sqrt(1 + np.pi / 8 * np.diagonal(pair_covariance, axis1=1, axis2=2))
    np.testing.assert_allclose(la.predict(pairs), softmax_np(kappa * rewards), rtol=1e-9)


def test_kron_equals_a_classifier_of_the_pair_as_a_two_step_sequence(reward_model, preferences):
    pairs, preferred = preferences
    sequence = keras.Input((2, D), dtype="float64")
    hidden = keras.layers.Dense(HIDDEN, activation="tanh", dtype="float64")(sequence)
    rewards = keras.layers.Dense(1, dtype="float64")(hidden)
    twin = keras.Model(sequence, keras.layers.Flatten(dtype="float64")(rewards))
    twin.set_weights(reward_model.get_weights())
    la = lt.Laplace(reward_model, "reward_modeling", hessian_structure="kron", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    reference = lt.Laplace(twin, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    for ours, expected in zip(la.curvature.blocks, reference.curvature.blocks, strict=True):
        np.testing.assert_allclose(ours.input_factor, expected.input_factor, rtol=1e-10)
        np.testing.assert_allclose(ours.output_factor, expected.output_factor, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(la.log_marginal_likelihood(), reference.log_marginal_likelihood(), rtol=1e-10)
    np.testing.assert_allclose(la.predict(pairs), reference.predict(pairs), rtol=1e-9)
    latent = la.predictive_distribution(pairs[:, 0])  # the reward itself: no observation noise
    np.testing.assert_allclose(latent.stddev() ** 2, la.predict(pairs[:, 0])[1], rtol=1e-12)
    np.testing.assert_allclose(la.predictive_distribution(pairs).probs_parameter(), la.predict(pairs), rtol=1e-12)
    # the item predictive takes the closed-form kron path; the pair one per-example Jacobians
    items = pairs[:, 0]
    jacobians = naive_jacobians(reward_model, items)
    _, variance = la.predict(items)
    np.testing.assert_allclose(variance[:, :, None], la.posterior.functional_variance(jacobians), rtol=1e-9)


def test_tuning_report_and_arviz_score_the_pairs(reward_model, preferences):
    pairs, preferred = preferences
    la = lt.Laplace(reward_model, "reward_modeling", hessian_structure="diag", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    la.optimize_prior_precision(method="gridsearch", val_data=(pairs, preferred), grid=[0.1, 1.0, 10.0], verbose=False)
    scores = []
    for prior in (0.1, 1.0, 10.0):
        la.prior_precision = prior
        probs = la.predict(pairs).numpy()
        scores.append(-np.mean(np.log(probs[np.arange(N_PAIRS), preferred])))
    np.testing.assert_allclose(la.grid_scores, scores, rtol=1e-10)
    la.prior_precision = 1.0
    report = la.evaluate(pairs, preferred)
    probs = la.predict(pairs).numpy()
    assert report.task == "preference pairs"
    np.testing.assert_allclose(report.metrics["Laplace"]["accuracy"], np.mean(probs.argmax(1) == preferred))
    np.testing.assert_allclose(report.metrics["Laplace"]["nll"], -np.mean(np.log(probs[np.arange(N_PAIRS), preferred])))
    data = la.to_inference_data(pairs, preferred, num_draws=8, num_chains=2, seed=0)
    np.testing.assert_array_equal(data.observed_data["y"].values, preferred)
    assert data.posterior_predictive["y"].shape == (2, 4, N_PAIRS)


def test_a_multi_input_reward_model_takes_pairs_of_each_input():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    price = keras.Input((1,), dtype="float64", name="price")
    embedded = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(6, 3, dtype="float64")(tokens))
    joined = keras.layers.Concatenate()([embedded, price])
    model = keras.Model({"tokens": tokens, "price": price}, keras.layers.Dense(1, dtype="float64")(joined))
    rng = np.random.default_rng(0)
    pairs = {"tokens": rng.integers(0, 6, (10, 2, 4)).astype("int32"), "price": rng.normal(size=(10, 2, 1))}
    preferred = rng.integers(0, 2, 10)
    la = lt.Laplace(model, "reward_modeling", hessian_structure="full", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    items = {"tokens": pairs["tokens"][:, 1], "price": pairs["price"][:, 1]}
    mean, variance = la.predict(items)
    jacobians = naive_jacobians(model, items)
    np.testing.assert_allclose(mean, model(items).numpy(), rtol=1e-12)
    np.testing.assert_allclose(variance[:, :, None], la.posterior.functional_variance(jacobians), rtol=1e-9)
    np.testing.assert_allclose(la.map_outputs(pairs)[:, 1], mean[:, 0], rtol=1e-12)


def test_saved_and_loaded_reward_posterior_predicts_the_same(reward_model, preferences, tmp_path):
    pairs, preferred = preferences
    la = lt.Laplace(reward_model, "reward_modeling", hessian_structure="kron", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    la.save(tmp_path / "reward.npz")
    loaded = lt.load(tmp_path / "reward.npz", reward_model)
    for x in (pairs[:, 0], pairs):
        np.testing.assert_allclose(loaded.predict(x), la.predict(x), rtol=1e-12)


def test_reward_mistakes_get_clear_errors(reward_model, preferences):
    pairs, preferred = preferences
    la = lt.Laplace(reward_model, "reward_modeling", hessian_structure="diag", subset_of_weights="all")
    with pytest.raises(ValueError, match=r"pairs of items: x must have shape \(N, 2, \.\.\.\)"):
        la.fit((pairs[:, 0], preferred), verbose=False)
    with pytest.raises(ValueError, match=r"must be in \[0, 2\)"):
        la.fit((pairs, preferred + 1), verbose=False)
    with pytest.raises(ValueError, match="index of the preferred item"):
        la.fit((pairs, np.stack([preferred, preferred], axis=1)), verbose=False)
    two_outputs = make_mlp(D, 2, hidden=(HIDDEN,))
    with pytest.raises(ValueError, match="one reward per item"):
        lt.Laplace(two_outputs, "reward_modeling", subset_of_weights="all", hessian_structure="full").fit(
            (pairs, preferred), verbose=False
        )
    la.fit((pairs, preferred), verbose=False)
    with pytest.raises(ValueError, match="scored on preference pairs"):
        la.evaluate(pairs[:, 0], preferred)
    with pytest.raises(ValueError, match=r"examples of shape \(4,\)"):
        la.predict(np.zeros((3, 4)))
