"""Inputs beyond fixed-shape numbers: text for a model that vectorises it itself, and sequences of
any length for a model that declares a free axis.

A model with ``TextVectorization`` inside is its token-id twin behind a string layer, so its Laplace
must equal the twin's, fed the same tokens. A model declaring ``keras.Input((None,))`` takes
sequences of any length: a posterior fitted on one length predicts on another, checked against
$J \\Sigma J^\\top$ built by hand, and a second `Laplace` on the same model may be fed another
length (it shares the model's compiled functions, which used to refuse the new shape)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import naive_jacobians, output_hessians_np

import laplace_tf as lt

WORDS = ["good", "bad", "great", "awful", "fine", "plot", "movie", "acting"]
RNG = np.random.default_rng(0)
TEXTS = np.array([" ".join(RNG.choice(WORDS, RNG.integers(1, 5))) for _ in range(40)])
LABELS = np.array([int("good" in t or "great" in t) for t in TEXTS])


def _text_and_token_models(head: str) -> tuple[keras.Model, keras.Model, keras.layers.TextVectorization]:
    """A text classifier and its token-id twin (the same layers after the vectoriser)."""
    keras.utils.set_random_seed(0)
    vectorizer = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=4)
    vectorizer.adapt(TEXTS)
    tokens = keras.Input((4,), dtype="int64")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(12, 3, dtype="float64")(tokens))
    if head == "prelu":  # a variable no probe covers: per-example Jacobians, looped over the texts
        hidden = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.3), dtype="float64")(hidden)
    token_model = keras.Model(tokens, keras.layers.Dense(2, dtype="float64")(hidden))
    text = keras.Input((), dtype="string")
    return keras.Model(text, token_model(vectorizer(text))), token_model, vectorizer


@pytest.mark.parametrize(("structure", "head"), [("kron", "pool"), ("full", "prelu"), ("diag", "prelu")])
def test_a_model_that_vectorises_text_equals_its_token_id_twin(structure, head):
    text_model, token_model, vectorizer = _text_and_token_models(head)
    token_ids = vectorizer(TEXTS).numpy()
    text_la = lt.Laplace(text_model, "classification", hessian_structure=structure, subset_of_weights="all").fit(
        (TEXTS, LABELS), verbose=False
    )
    token_la = lt.Laplace(token_model, "classification", hessian_structure=structure, subset_of_weights="all")
    token_la.fit((token_ids, LABELS), verbose=False)
    np.testing.assert_allclose(text_la.log_marginal_likelihood(), token_la.log_marginal_likelihood(), rtol=1e-12)
    np.testing.assert_allclose(text_la.predict(list(TEXTS[:5])), token_la.predict(token_ids[:5]), rtol=1e-10)
    sampled = text_la.predict(TEXTS[:5], pred_type="nn", n_samples=20, seed=3)
    expected = token_la.predict(token_ids[:5], pred_type="nn", n_samples=20, seed=3)
    np.testing.assert_allclose(sampled, expected, rtol=1e-10)
    with pytest.raises(TypeError, match="fitted on text"):
        text_la.predict(token_ids[:5, 0].astype("float64"))


def _free_length_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    tokens = keras.Input((None,), dtype="int32")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(9, 3, dtype="float64")(tokens))
    return keras.Model(tokens, keras.layers.Dense(3, dtype="float64")(hidden))


def test_sequences_of_any_length_use_one_posterior_and_a_second_laplace_may_change_the_length():
    model = _free_length_model()
    short, long = RNG.integers(0, 9, (30, 6)).astype("int32"), RNG.integers(0, 9, (30, 9)).astype("int32")
    y = RNG.integers(0, 3, 30)
    fitted_short = lt.Laplace(model, "classification", hessian_structure="full", subset_of_weights="all").fit(
        (short, y), verbose=False
    )
    jacobians = naive_jacobians(model, long)
    covariance = fitted_short.posterior.covariance.numpy()
    expected = np.einsum("nkp,pq,nlq->nkl", jacobians, covariance, jacobians)
    np.testing.assert_allclose(fitted_short.glm_output_distribution(long)[1], expected, rtol=1e-8, atol=1e-12)

    fitted_long = lt.Laplace(model, "classification", hessian_structure="full", subset_of_weights="all").fit(
        (long, y), verbose=False
    )
    outputs = model(long).numpy()
    ggn = np.einsum("nkp,nkl,nlq->pq", jacobians, output_hessians_np(outputs, "classification"), jacobians)
    expected_covariance = np.linalg.inv(ggn + np.eye(len(ggn)))  # prior precision 1
    np.testing.assert_allclose(fitted_long.posterior.covariance, expected_covariance, rtol=1e-8, atol=1e-12)


def _padded_batches(lengths: list[int], size: int = 5) -> tuple[tf.data.Dataset, list[tuple]]:
    """Batches of token sequences padded to the given lengths, as a dataset and as arrays."""
    batches = [(RNG.integers(0, 9, (size, n)).astype("int32"), RNG.integers(0, 3, size)) for n in lengths]
    signature = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int64))
    return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=signature), batches


def test_batches_padded_to_other_lengths_share_a_compiled_function(monkeypatch):
    """A dataset padded batch by batch (``padded_batch``) gives each batch its own length: on the
    model's free axis they share one compiled function, traced again only for a batch longer than
    all before. The diagonal GGN is the sum of the batches' naive ones."""
    model, traces = _free_length_model(), []
    real_function = tf.function

    def counting(fn, **options):
        def traced(*args):
            traces.append(args[1].shape.as_list())
            return fn(*args)

        return real_function(traced, **options)

    monkeypatch.setattr(tf, "function", counting)
    dataset, batches = _padded_batches([6, 3, 6, 12, 5])
    la = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        dataset, verbose=False
    )
    assert traces == [[None, None], [None, None]]  # traced for lengths up to 8, then up to 16
    expected = 0.0
    for x, _ in batches:
        jacobians = naive_jacobians(model, x)
        hessians = output_hessians_np(model(x).numpy(), "classification")
        expected += np.einsum("nkp,nkl,nlp->p", jacobians, hessians, jacobians)
    np.testing.assert_allclose(la.curvature, expected, rtol=1e-6)  # the pooling layer computes in float32


def test_a_padded_batch_too_long_for_memory_is_refused(monkeypatch):
    """The chunks of columns (and the memory guard) of a function traced for a free length are
    sized for the longest batch it serves: a long batch after short ones is refused, not run."""
    monkeypatch.setattr("laplace_tf.networks.validation.default_memory_limit", lambda: 20_000)
    dataset, _ = _padded_batches([6, 200])
    la = lt.Laplace(_free_length_model(), "classification", hessian_structure="diag", subset_of_weights="all")
    with pytest.raises(MemoryError, match=r"backward pass of a batch of 5 examples"):
        la.fit(dataset, verbose=False)


def test_a_second_laplace_on_one_model_may_give_the_features_another_rank():
    """``(N,)`` and ``(N, 1)`` both feed ``keras.Input((1,))``; the second used to fail to bind."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])
    x = RNG.normal(size=(25, 1)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    column = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    flat = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x[:, 0], y), verbose=False
    )
    np.testing.assert_allclose(flat.log_marginal_likelihood(), column.log_marginal_likelihood(), rtol=1e-6)
    np.testing.assert_allclose(flat.predict(x[:4, 0]), column.predict(x[:4]), rtol=1e-6)


def test_text_in_a_dataset_and_a_saved_laplace(tmp_path):
    text_model, _, _ = _text_and_token_models("pool")
    dataset = tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).batch(16)
    la = lt.Laplace(text_model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        dataset, verbose=False
    )
    from_arrays = lt.Laplace(text_model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        (TEXTS, LABELS), verbose=False
    )
    np.testing.assert_allclose(la.predict(dataset), from_arrays.predict(TEXTS), rtol=1e-12)
    la.save(tmp_path / "text.laplace")
    loaded = lt.load(tmp_path / "text.laplace", text_model)
    np.testing.assert_allclose(loaded.predict(TEXTS[:3]), la.predict(TEXTS[:3]), rtol=1e-12)
