"""Curvature values against dense references built by hand, example by example."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    N_CLASSES,
    cross_entropy,
    flat_weights,
    make_mlp,
    naive_gradients,
    naive_jacobians,
    output_hessians_np,
    subclassed_copy,
)

import laplace_tf as lt
from laplace_tf.networks.likelihoods import get_likelihood

LIKELIHOOD_OUTPUTS = {"classification": N_CLASSES, "regression": 2, "binary": 1, "multilabel": 3}


def _data(likelihood, n=17, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    if likelihood == "classification":
        return x, rng.integers(0, N_CLASSES, size=n)
    if likelihood == "binary":
        return x, rng.integers(0, 2, size=n)
    if likelihood == "multilabel":
        return x, rng.integers(0, 2, size=(n, 3))
    return x, rng.normal(size=(n, 2))


def _unit_loss(likelihood):
    if likelihood == "classification":
        return cross_entropy
    if likelihood == "binary":
        return lambda f, y: keras.losses.binary_crossentropy(tf.cast(y, f.dtype)[:, None], f, from_logits=True)[0]
    if likelihood == "multilabel":  # keras averages over labels; the likelihood sums them
        return lambda f, y: 3 * keras.losses.binary_crossentropy(tf.cast(y, f.dtype), f, from_logits=True)[0]
    return lambda f, y: 0.5 * tf.reduce_sum((f - y) ** 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("classes", [2, 3, 10])
def test_softmax_hessian_root_has_one_column_fewer_and_squares_to_the_hessian(classes, dtype):
    """V V^T = diag(p) - p p^T with K - 1 columns, as accurate as the Hessian's own entries also
    where one class takes almost all the probability (first, last or in between)."""
    rng = np.random.default_rng(classes)
    logits = 2 * rng.normal(size=(12, classes))
    logits[:3, 0] += 14  # confident first, last and middle classes
    logits[3:6, -1] += 14
    logits[6:9, classes // 2] += 14
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    others = np.stack([np.delete(p, k, axis=1).sum(axis=1) for k in range(classes)], axis=1)
    exact = -p[:, :, None] * p[:, None, :]  # float64; the diagonal p_k (1 - p_k) without cancelling
    exact[:, np.arange(classes), np.arange(classes)] = p * others
    root = get_likelihood("classification").hessian_sqrt(tf.constant(logits, dtype)).numpy()
    assert root.shape == (12, classes, classes - 1)
    squared = np.einsum("nkc,nlc->nkl", root.astype(np.float64), root)
    epsilon = np.finfo(dtype).eps
    scale = np.abs(exact).max(axis=(1, 2), keepdims=True)  # each example's own Hessian scale
    assert np.all(np.abs(squared - exact) <= 40 * epsilon * scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("classes", [2, 10])
def test_output_hessians_stay_accurate_for_confident_predictions(classes, dtype):
    """Lambda, its sum over examples, its diagonal and Lambda J, where one class takes all but about
    1e-6 of the probability: 1 - p_m computed from a rounded p_m would be off by percents (which a
    trained classifier's fit then sums), so each is checked against float64 at its own scale.
    The binary likelihood's sigma(f) (1 - sigma(f)) likewise, at logits of -14 to 14."""
    rng = np.random.default_rng(classes)
    logits = 2 * rng.normal(size=(12, classes))
    logits[:4, 0] += 14
    logits[4:8, -1] += 14
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    others = np.stack([np.delete(p, k, axis=1).sum(axis=1) for k in range(classes)], axis=1)
    exact = -p[:, :, None] * p[:, None, :]
    exact[:, np.arange(classes), np.arange(classes)] = p * others
    jacobians = rng.normal(size=(12, classes, 5))
    likelihood, f = get_likelihood("classification"), tf.constant(logits, dtype)
    epsilon, scale = np.finfo(dtype).eps, np.abs(exact).max(axis=(1, 2), keepdims=True)
    assert np.all(np.abs(likelihood.output_hessian(f).numpy() - exact) <= 40 * epsilon * scale)
    assert np.all(np.abs(likelihood.output_hessian_diagonal(f).numpy() - p * others) <= 40 * epsilon * scale[:, 0])
    np.testing.assert_allclose(likelihood.output_hessian_sum(f), exact.sum(axis=0), rtol=40 * epsilon)
    product = likelihood.hessian_times(f, tf.constant(jacobians, dtype)).numpy()
    bound = 40 * epsilon * scale * np.abs(jacobians).max(axis=(1, 2), keepdims=True) * classes
    assert np.all(np.abs(product - np.einsum("nkl,nlp->nkp", exact, jacobians)) <= bound)
    binary_logits = np.linspace(-14, 14, 8)[:, None]
    small = np.exp(-np.abs(binary_logits))  # sigma(f) (1 - sigma(f)) = e^-|f| / (1 + e^-|f|)^2, no cancelling
    binary = get_likelihood("binary").output_hessian_diagonal(tf.constant(binary_logits, dtype))
    np.testing.assert_allclose(binary, small / (1 + small) ** 2, rtol=40 * epsilon)


def test_softmax_loss_is_the_cross_entropy_and_ignores_zero_labels_whose_log_probability_underflows():
    """-sum(y log softmax(f)) against float64 NumPy, with one example whose other classes' log
    probabilities are -inf in float32 (tf.nn.softmax_cross_entropy_with_logits gives NaN there)."""
    logits = np.array([[3e38, -3e38, 0.0], [1.0, 2.0, 3.0], [-2.0, 0.5, 0.1]])
    labels = np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    expected = -(labels * log_p).sum(axis=1)
    loss = get_likelihood("classification").loss(tf.constant(logits, tf.float32), tf.constant(labels, tf.float32))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "likelihood", ["classification", "regression", "binary", "multilabel", "heteroscedastic", "reward_modeling"]
)
def test_each_likelihood_states_its_hessian_roots_column_count(likelihood):
    """The probes size a tiled pass by `hessian_sqrt_columns` before any output exists: it must be
    the width `hessian_sqrt` gives (a wrong count would send every fit down the slower path)."""
    lik = get_likelihood(likelihood)
    for outputs in (2, 4) if likelihood == "heteroscedastic" else (1, 2, 5):
        f = tf.constant(np.random.default_rng(outputs).normal(size=(3, outputs)), tf.float32)
        assert lik.hessian_sqrt(f).shape[-1] == lik.hessian_sqrt_columns(outputs), outputs


@pytest.mark.parametrize("likelihood", ["classification", "regression", "binary", "multilabel"])
def test_full_ggn_equals_dense_jt_h_j(likelihood):
    model = make_mlp(4, LIKELIHOOD_OUTPUTS[likelihood])
    x, y = _data(likelihood)
    la = lt.Laplace(model, likelihood, hessian_structure="full", subset_of_weights="all").fit(
        (x, y), batch_size=5, verbose=False
    )
    jac = naive_jacobians(model, x)
    lam = output_hessians_np(np.asarray(model(x)), likelihood)
    expected = np.einsum("nkp,nkl,nlq->pq", jac, lam, jac)
    np.testing.assert_allclose(la.curvature, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("likelihood", ["classification", "regression", "binary", "multilabel"])
def test_empirical_fisher_equals_sum_of_gradient_outer_products(likelihood):
    model = make_mlp(4, LIKELIHOOD_OUTPUTS[likelihood])
    x, y = _data(likelihood)
    la = lt.Laplace(model, likelihood, curvature="ef", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), batch_size=6, verbose=False
    )
    grads = naive_gradients(model, x, y, _unit_loss(likelihood))
    np.testing.assert_allclose(la.curvature, grads.T @ grads, rtol=1e-10, atol=1e-12)


def test_exact_hessian_curvature_equals_finite_differences_of_the_gradient():
    model = make_mlp(4, N_CLASSES, hidden=(3,))
    x, y = _data("classification", n=9)
    la = lt.Laplace(
        model, "classification", curvature="hessian", subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), batch_size=4, verbose=False)
    theta, eps = flat_weights(model), 1e-6

    def gradient_at(t):
        from conftest import set_flat_weights

        set_flat_weights(model, t)
        return naive_gradients(model, x, y, cross_entropy).sum(axis=0)

    columns = []
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        columns.append((gradient_at(theta + step) - gradient_at(theta - step)) / (2 * eps))
    gradient_at(theta)
    np.testing.assert_allclose(la.curvature, np.stack(columns, axis=1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("curvature", ["ggn", "ef", "hessian"])
@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_diag_equals_the_diagonal_of_full(curvature, likelihood):
    model = make_mlp(4, LIKELIHOOD_OUTPUTS[likelihood])
    data = _data(likelihood)
    full = lt.Laplace(model, likelihood, curvature=curvature, subset_of_weights="all", hessian_structure="full").fit(
        data, verbose=False
    )
    diag = lt.Laplace(model, likelihood, hessian_structure="diag", curvature=curvature, subset_of_weights="all").fit(
        data, verbose=False
    )
    np.testing.assert_allclose(diag.curvature, np.diag(full.curvature), rtol=1e-10, atol=1e-12)


class _SharedDense(keras.Model):
    """One Dense layer applied to both halves of the input (shared weights, subclassed)."""

    def __init__(self):
        super().__init__(dtype="float64")
        self.shared = keras.layers.Dense(3, activation="tanh", dtype="float64")
        self.out = keras.layers.Dense(N_CLASSES, dtype="float64")

    def call(self, x):
        return self.out(self.shared(x[:, :2]) + self.shared(x[:, 2:]))


class _RowsPerPosition(keras.Model):
    """A Dense layer applied to ``(B * 2, 2)`` rows (a reshape), and one to time-major ``(2, B, 2)``."""

    def __init__(self, time_major: bool):
        super().__init__(dtype="float64")
        self.time_major = time_major
        self.inner = keras.layers.Dense(3, activation="tanh", dtype="float64")
        self.out = keras.layers.Dense(N_CLASSES, dtype="float64")

    def call(self, x):
        if self.time_major:
            steps = tf.transpose(tf.reshape(x, [-1, 2, 2]), [1, 0, 2])
            hidden = tf.transpose(self.inner(steps), [1, 0, 2])
        else:
            hidden = self.inner(tf.reshape(x, [-1, 2]))
        return self.out(tf.reshape(hidden, [-1, 6]))


class FiniteRows(keras.layers.Layer):
    """``(B, 4)`` inputs as ``(B * 2, 2)`` rows, kept where finite (all are): a row count that
    static shapes leave unknown."""

    def call(self, x):
        rows = tf.reshape(x, [-1, 2])
        return tf.boolean_mask(rows, tf.reduce_all(tf.math.is_finite(rows), axis=1))

    def compute_output_shape(self, input_shape):
        return (None, 2)


def _rows_per_position_functional(row_count_known: bool) -> keras.Model:
    """A functional model (output count declared, so the fit learns the rows from a trace) whose
    inner Dense layer sees two rows per example."""
    inputs = keras.Input((4,), dtype="float64")
    rows = keras.ops.reshape(inputs, (-1, 2)) if row_count_known else FiniteRows(dtype="float64")(inputs)
    hidden = keras.layers.Dense(3, activation="tanh", dtype="float64")(rows)
    return keras.Model(inputs, keras.layers.Dense(N_CLASSES, dtype="float64")(keras.ops.reshape(hidden, (-1, 6))))


def test_diag_by_probes_equals_the_jacobian_diagonal_beside_other_layers_and_shared_weights():
    """Dense and LayerNormalization layers take the probe path (no per-example Jacobians), a PReLU
    (no probe rule) the Jacobian one, and a layer called twice sums its calls as positions."""
    inputs = keras.Input((4,), dtype="float64")
    hidden = keras.layers.Dense(5, activation="tanh", dtype="float64")(inputs)
    hidden = keras.layers.LayerNormalization(dtype="float64")(hidden)
    hidden = keras.layers.PReLU(dtype="float64")(hidden)
    mixed = keras.Model(inputs, keras.layers.Dense(N_CLASSES, dtype="float64")(hidden))
    others = [_SharedDense(), _RowsPerPosition(time_major=False), _RowsPerPosition(time_major=True)]
    for model in others:
        model(np.zeros((1, 4)))
    others += [_rows_per_position_functional(row_count_known=known) for known in (True, False)]
    x, y = _data("classification")
    for model in (mixed, *others):
        jacobians = naive_jacobians(model, x)
        hessians = output_hessians_np(model(x).numpy(), "classification")
        expected = np.einsum("nkp,nkl,nlp->p", jacobians, hessians, jacobians)
        la = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
            (x, y), batch_size=7, verbose=False
        )
        np.testing.assert_allclose(la.curvature, expected, rtol=1e-10, atol=1e-13)
    assert (
        lt.Laplace(
            mixed, "classification", hessian_structure="diag", subset_of_weights="all"
        )._estimator.jacobian_params
        == 5
    )  # PReLU


def test_batching_and_datasets_give_the_same_curvature():
    model = make_mlp(4, N_CLASSES)
    x, y = _data("classification", n=30)
    one_batch = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), batch_size=30, verbose=False
    )
    small_batches = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), batch_size=7, verbose=False
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    streamed = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        dataset, verbose=False
    )
    for other in (small_batches, streamed):
        np.testing.assert_allclose(other.curvature, one_batch.curvature, rtol=1e-10, atol=1e-12)
        assert other.n_data == 30
    np.testing.assert_allclose(float(streamed.log_likelihood()), float(one_batch.log_likelihood()), rtol=1e-12)


def test_one_hot_labels_equal_integer_labels():
    model = make_mlp(4, N_CLASSES)
    x, y = _data("classification")
    integer = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    )
    one_hot = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, np.eye(N_CLASSES)[y]), verbose=False
    )
    np.testing.assert_allclose(one_hot.curvature, integer.curvature, rtol=1e-12)


def _functional(dtype):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4,), dtype=dtype)
    hidden = keras.layers.Dense(5, activation="tanh", dtype=dtype)(inputs)
    return keras.Model(inputs, keras.layers.Dense(N_CLASSES, dtype=dtype)(hidden))


def test_sequential_functional_and_subclassed_models_agree():
    x, y = _data("classification")
    reference = _functional("float64")
    subclassed = subclassed_copy(reference)
    results = [
        lt.Laplace(m, "classification", subset_of_weights="all", hessian_structure="full").fit((x, y), verbose=False)
        for m in (reference, subclassed)
    ]
    np.testing.assert_allclose(results[1].curvature, results[0].curvature, rtol=1e-12)
    jac = naive_jacobians(reference, x)
    lam = output_hessians_np(np.asarray(reference(x)), "classification")
    np.testing.assert_allclose(results[0].curvature, np.einsum("nkp,nkl,nlq->pq", jac, lam, jac), rtol=1e-10)


def test_float32_model_gives_float32_results_close_to_float64():
    x, y = _data("classification")
    model64, model32 = _functional("float64"), _functional("float32")
    for target, source in zip(model32.trainable_variables, model64.trainable_variables, strict=True):
        target.assign(np.asarray(source.value, dtype="float32"))
    la64 = lt.Laplace(model64, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    )
    la32 = lt.Laplace(model32, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x.astype("float32"), y), verbose=False
    )
    assert la32.curvature.dtype == tf.float32 and la64.curvature.dtype == tf.float64
    assert la32.predict(x).dtype == tf.float32
    np.testing.assert_allclose(la32.curvature, la64.curvature, rtol=1e-3, atol=1e-5)


def test_compiled_functions_are_shared_per_model_and_freed_with_it():
    import gc
    import weakref

    model = make_mlp(4, N_CLASSES)
    x, y = _data("classification")
    first = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    second = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    assert first._estimator is second._estimator and first._fitted_view.jacobians is second._fitted_view.jacobians
    np.testing.assert_allclose(second.curvature, first.curvature)
    other = lt.Laplace(model, "classification", hessian_structure="full", subset_of_weights="all")
    assert other._estimator is not first._estimator and other._fitted_view.jacobians is first._fitted_view.jacobians
    model_ref = weakref.ref(model)
    del model, first, second, other
    gc.collect()
    assert model_ref() is None  # the cache does not keep the model alive
