"""The models people train: multi-input, recurrent, convolutional with BatchNorm, residual,
attention, mixed precision, reloaded from .keras; against independent references.

The main check, for every model and structure: at a very large prior precision lambda the
posterior covariance tends to I / lambda, so lambda * J Sigma J^T must approach J J^T with J
computed directly by a GradientTape through the Keras model, one example at a time.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, kron_and_full_curvature, naive_jacobians, output_hessians_np

import laplace_tf as lt
from laplace_tf.networks import validation
from laplace_tf.networks.curvature import probe_passes
from laplace_tf.networks.curvature.diag_probes import probe_rules
from laplace_tf.networks.curvature.graph_calls import forward_calls
from laplace_tf.networks.curvature.kfac_layers import uncovered_size
from laplace_tf.networks.curvature.kron import DiagBlock
from laplace_tf.networks.curvature.output_layer import dense_output_rule
from laplace_tf.networks.curvature.probed_jacobians import jacobians_function
from laplace_tf.networks.layer_factors import layer_factors

LAYERS = keras.layers
N = 6
HUGE_PRIOR = 1e7


def cnn_with_batchnorm():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            LAYERS.Conv2D(3, 3),
            LAYERS.BatchNormalization(),
            LAYERS.ReLU(),
            LAYERS.Dropout(0.3),
            LAYERS.Flatten(),
            LAYERS.Dense(N_CLASSES),
        ]
    )
    rng = np.random.default_rng(7)  # statistics and scales as after training, not the initial ones
    gamma, beta, mean, variance = rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)
    model.layers[1].set_weights([gamma, beta, mean, variance])
    return model


def residual_block():
    inputs = keras.Input((5,))
    hidden = LAYERS.Dense(5, activation="relu")(inputs)
    hidden = LAYERS.LayerNormalization()(LAYERS.Add()([inputs, LAYERS.Dense(5)(hidden)]))
    return keras.Model(inputs, LAYERS.Dense(N_CLASSES)(hidden))


def recurrent(cell: str):
    """Recurrent layers as people stack them: padded (masked) sequences into an LSTM returning
    sequences, then a SimpleRNN running backwards, unrolled; GRUs with and without ``reset_after``;
    a bidirectional LSTM."""
    layers = {
        "lstm": [LAYERS.LSTM(4, return_sequences=True), LAYERS.SimpleRNN(3, go_backwards=True, unroll=True)],
        "gru": [LAYERS.GRU(4, return_sequences=True, reset_after=False), LAYERS.GRU(3, go_backwards=True)],
        "bidirectional": [LAYERS.Bidirectional(LAYERS.LSTM(3))],
    }
    embedding = LAYERS.Embedding(9, 3, mask_zero=cell == "lstm")
    return keras.Sequential([keras.Input((5,), dtype="int32"), embedding, *layers[cell], LAYERS.Dense(N_CLASSES)])


def transformer_block(length: int = 4, dtype: str = "float32", outputs: int = N_CLASSES):
    tokens = keras.Input((length,), dtype="int32")
    embedded = LAYERS.Embedding(11, 6, dtype=dtype)(tokens)
    attended = LAYERS.MultiHeadAttention(2, 3, dtype=dtype)(embedded, embedded)
    hidden = LAYERS.LayerNormalization(dtype=dtype)(LAYERS.Add(dtype=dtype)([embedded, attended]))
    feed_forward = LAYERS.Dense(6, dtype=dtype)(LAYERS.Dense(8, activation="relu", dtype=dtype)(hidden))
    hidden = LAYERS.LayerNormalization(dtype=dtype)(LAYERS.Add(dtype=dtype)([hidden, feed_forward]))
    pooled = LAYERS.GlobalAveragePooling1D(dtype=dtype)(hidden)
    return keras.Model(tokens, LAYERS.Dense(outputs, dtype=dtype)(pooled))


def two_inputs():
    image = keras.Input((4,), name="image")
    meta = keras.Input((2,), name="meta")
    hidden = LAYERS.Concatenate()([LAYERS.Dense(4, activation="tanh")(image), meta])
    return keras.Model({"image": image, "meta": meta}, LAYERS.Dense(N_CLASSES)(hidden))


def depthwise():
    """MobileNet's and Xception's pieces: depthwise and separable convolutions (dilated, multiplied,
    strided, without bias, 1-D), grouped convolutions (RegNet, ResNeXt) with a group normalisation,
    and a causal dilated convolution (TCN, WaveNet)."""
    image, sequence = keras.Input((6, 6, 2), name="image"), keras.Input((8, 2), name="sequence")
    hidden = LAYERS.DepthwiseConv2D(3, padding="same", depth_multiplier=2, dilation_rate=2)(image)
    hidden = LAYERS.ReLU(6.0)(LAYERS.BatchNormalization()(hidden))
    hidden = LAYERS.Conv2D(4, 3, padding="same", groups=2, activation="tanh")(hidden)
    hidden = LAYERS.GroupNormalization(2)(hidden)
    hidden = LAYERS.DepthwiseConv2D(2, strides=2, use_bias=False, activation="tanh")(hidden)
    hidden = LAYERS.SeparableConv2D(3, 2, padding="same", use_bias=False)(hidden)
    pooled = LAYERS.GlobalAveragePooling2D()(LAYERS.SeparableConv2D(3, 2, strides=2, depth_multiplier=2)(hidden))
    steps = LAYERS.Conv1D(2, 3, padding="causal", dilation_rate=2, activation="tanh")(sequence)
    steps = LAYERS.Conv1D(4, 2, groups=2, use_bias=False)(steps)
    steps = LAYERS.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2)(steps)
    steps = LAYERS.Flatten()(LAYERS.SeparableConv1D(2, 2, depth_multiplier=2, activation="relu")(steps))
    return keras.Model(
        {"image": image, "sequence": sequence}, LAYERS.Dense(N_CLASSES)(LAYERS.Concatenate()([pooled, steps]))
    )


def inputs_for(name: str, n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    if name in ("lstm", "gru", "bidirectional"):
        return rng.integers(0, 9, (n, 5)).astype("int32")
    if name == "transformer":
        return rng.integers(0, 11, (n, 4)).astype("int32")
    if name == "cnn":
        return rng.normal(size=(n, 6, 6, 1)).astype("float32")
    if name == "depthwise":
        return {
            "image": rng.normal(size=(n, 6, 6, 2)).astype("float32"),
            "sequence": rng.normal(size=(n, 8, 2)).astype("float32"),
        }
    if name == "two_inputs":
        return {"image": rng.normal(size=(n, 4)).astype("float32"), "meta": rng.normal(size=(n, 2)).astype("float32")}
    return rng.normal(size=(n, 5)).astype("float32")


BUILDERS = {
    "cnn": cnn_with_batchnorm,
    "depthwise": depthwise,
    "residual": residual_block,
    "lstm": lambda: recurrent("lstm"),
    "gru": lambda: recurrent("gru"),
    "bidirectional": lambda: recurrent("bidirectional"),
    "transformer": transformer_block,
    "two_inputs": two_inputs,
}
STRUCTURES = [("full", "all"), ("diag", "all"), ("kron", "all"), ("lowrank", "all"), ("full", "last_layer")]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def real_model(request):
    keras.utils.set_random_seed(1)
    model = BUILDERS[request.param]()
    x = inputs_for(request.param)
    y = np.random.default_rng(2).integers(0, N_CLASSES, N)
    return request.param, model, x, y


@pytest.mark.parametrize(("structure", "subset"), STRUCTURES)
def test_linearised_covariance_tends_to_j_jt_at_a_huge_prior(real_model, structure, subset):
    _, model, x, y = real_model
    state = [np.array(v.value) for v in model.non_trainable_variables]
    options = {"rank": 3} if structure == "lowrank" else {}
    la = lt.Laplace(
        model,
        "classification",
        hessian_structure=structure,
        subset_of_weights=subset,
        prior_precision=HUGE_PRIOR,
        **options,
    )
    la.fit((x, y), batch_size=4, verbose=False)
    f_mean, f_var = la.glm_output_distribution(x, verbose=False)
    jacobians = naive_jacobians(model, x)[:, :, _selected(la, model)]
    expected = np.einsum("nkp,nlp->nkl", jacobians, jacobians)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(HUGE_PRIOR * f_var.numpy(), expected, rtol=2e-3, atol=2e-3 * scale)
    np.testing.assert_allclose(f_mean, model(x, training=False), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(la.predict(x, verbose=False), la.predict(x, verbose=False))  # no dropout
    draws = la.predictive_samples(x, n_samples=3, pred_type="nn", seed=0, verbose=False)
    np.testing.assert_array_equal(draws, la.predictive_samples(x, n_samples=3, pred_type="nn", seed=0, verbose=False))
    one_draw = la.outputs_at_draws(la.mean[None], x, verbose=False)[0]  # after three: a traced number of draws
    np.testing.assert_allclose(one_draw, model(x, training=False), rtol=1e-5, atol=1e-6)
    for before, variable in zip(state, model.non_trainable_variables, strict=True):  # BatchNorm statistics
        np.testing.assert_array_equal(before, variable.value)
    assert np.isfinite(float(la.log_marginal_likelihood()))


def _selected(la, model) -> np.ndarray:
    """The columns of the model's flat trainable weights that the Laplace is over."""
    starts = np.cumsum([0] + [int(np.prod(v.shape)) for v in model.trainable_variables])
    chosen = {v.path for v in la.params.variables}
    return np.concatenate(
        [
            np.arange(a, b)
            for a, b, v in zip(starts[:-1], starts[1:], model.trainable_variables, strict=True)
            if v.path in chosen
        ]
    )


def test_diag_ggn_equals_the_naive_one(real_model):
    """Probes (convolutions, BatchNorm, LayerNorm, attention, embeddings, Dense layers on sequences,
    recurrent layers; tiled, not vectorised, for recurrent, attention and grouped-convolution models) give the
    GGN diagonal built by hand, without per-example Jacobians."""
    name, model, x, y = real_model
    la = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        (x, y), batch_size=4, verbose=False
    )
    assert la.params.vectorize == (name not in ("lstm", "gru", "bidirectional", "transformer", "depthwise"))
    assert uncovered_size(la.params, probe_rules(la.params)) == 0
    jacobians = naive_jacobians(model, x)
    hessians = output_hessians_np(np.asarray(model(x), np.float64), "classification")
    expected = np.einsum("nkp,nkl,nlp->p", jacobians, hessians, jacobians)
    np.testing.assert_allclose(la.curvature, expected, rtol=2e-4, atol=1e-6 * expected.max())


def test_one_column_on_a_model_pfor_cannot_vectorise_gives_the_naive_curvature():
    """One output of regression (one column) on the Transformer: the forward pass that gives f
    serves one plain backward pass, no tiling; diag and full equal J^T J built by hand."""
    keras.utils.set_random_seed(3)
    model, x = transformer_block(outputs=1), inputs_for("transformer")
    y = np.random.default_rng(3).normal(size=(len(x), 1))
    fitted = {
        structure: lt.Laplace(model, "regression", hessian_structure=structure, subset_of_weights="all").fit(
            (x, y), batch_size=4, verbose=False
        )
        for structure in ("diag", "full")
    }
    assert not fitted["diag"].params.vectorize
    jacobians = naive_jacobians(model, x)[:, 0]
    expected = jacobians.T @ jacobians
    scale = np.abs(expected).max()
    np.testing.assert_allclose(fitted["full"].curvature, expected, rtol=2e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(fitted["diag"].curvature, np.diag(expected), rtol=2e-4, atol=1e-6 * scale)


def test_probed_jacobians_equal_the_naive_ones(real_model):
    """The (B, K, P) Jacobians from layer probes (and per example for what has no probe rule)."""
    _, model, x, _ = real_model
    params = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").params
    f, jacobians = tf.function(jacobians_function(params))(params.theta, tf.nest.map_structure(tf.constant, x))
    np.testing.assert_allclose(f, model(x, training=False), rtol=1e-6, atol=1e-6)
    expected = naive_jacobians(model, x)
    np.testing.assert_allclose(jacobians, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def _kron_blocks_as_dense(curvature):
    for block in curvature.blocks:
        if isinstance(block, DiagBlock):
            yield np.diag(block.diagonal.numpy())
            continue
        a = block.input_factor.numpy()
        yield np.kron(np.diag(a) if a.ndim == 1 else a, block.output_factor.numpy())


def _conv_model(layer, input_shape):
    return keras.Sequential(
        [
            keras.Input(input_shape, dtype="float64"),
            layer,
            LAYERS.Flatten(dtype="float64"),
            LAYERS.Dense(2, dtype="float64"),
        ]
    )


def _one_step_recurrent(cell: str):
    """One step of a recurrent layer whose initial state a second input sets (else the recurrent
    kernel's input h_{t-1} would be zero), float64."""
    options = {"dtype": "float64"}
    sequence, state = keras.Input((1, 2), name="sequence", **options), keras.Input((3,), name="state", **options)
    starts = [LAYERS.Dense(3, activation="tanh", **options)(state) for _ in range(2 if cell == "lstm" else 1)]
    layer = {"lstm": LAYERS.LSTM, "gru": LAYERS.GRU, "simple_rnn": LAYERS.SimpleRNN}[cell](3, **options)
    outputs = LAYERS.Dense(2, **options)(layer(sequence, initial_state=starts))
    rng = np.random.default_rng(6)
    return keras.Model({"sequence": sequence, "state": state}, outputs), {
        "sequence": rng.normal(size=(1, 1, 2)),
        "state": rng.normal(size=(1, 3)),
    }


@pytest.mark.parametrize(
    "name",
    [
        "einsum",
        "transformer_one_position",
        "conv1d",
        "conv1d_causal",
        "conv3d",
        "time_distributed",
        "lstm",
        "gru",
        "simple_rnn",
    ],
)
def test_kfac_is_the_exact_ggn_block_on_one_example_at_one_position(name):
    keras.utils.set_random_seed(4)
    rng = np.random.default_rng(5)
    if name == "einsum":
        inputs = keras.Input((3,), dtype="float64")
        hidden = LAYERS.EinsumDense("ab,bcd->acd", (2, 2), bias_axes="cd", activation="tanh", dtype="float64")(inputs)
        model = keras.Model(inputs, LAYERS.Dense(2, dtype="float64")(LAYERS.Flatten(dtype="float64")(hidden)))
        x = rng.normal(size=(1, 3))
    elif name == "transformer_one_position":
        model, x = transformer_block(length=1, dtype="float64"), np.array([[7]], dtype="int32")
    elif name == "conv1d":
        model, x = (
            _conv_model(LAYERS.Conv1D(3, 4, activation="tanh", dtype="float64"), (4, 2)),
            rng.normal(size=(1, 4, 2)),
        )
    elif name == "conv1d_causal":  # one position: the dilated kernel's left end reads the padding
        layer = LAYERS.Conv1D(3, 2, padding="causal", dilation_rate=2, activation="tanh", dtype="float64")
        model, x = _conv_model(layer, (1, 2)), rng.normal(size=(1, 1, 2))
    elif name == "conv3d":
        model = _conv_model(LAYERS.Conv3D(2, 2, activation="tanh", dtype="float64"), (2, 2, 2, 2))
        x = rng.normal(size=(1, 2, 2, 2, 2))
    elif name == "time_distributed":
        layer = LAYERS.TimeDistributed(LAYERS.Dense(3, activation="tanh", dtype="float64"), dtype="float64")
        model, x = _conv_model(layer, (1, 2)), rng.normal(size=(1, 1, 2))
    else:  # one step of a recurrent layer (a GRU's reset_after: the recurrent product scaled by r_t)
        model, x = _one_step_recurrent(name)
    y = np.array([1])
    kron, full = kron_and_full_curvature(model, (x, y))
    kinds = set(kron._estimator.treatment.values())
    expected_kind = {
        "einsum": "einsum",
        "transformer_one_position": "einsum",
        "time_distributed": "dense",
        "conv1d_causal": "conv1d",
        "lstm": "recurrent",
        "gru": "recurrent",
        "simple_rnn": "recurrent",
    }
    assert f"kron ({expected_kind.get(name, name)})" in kinds
    if name == "transformer_one_position":  # every projection and feed-forward layer, and the norms' diagonals
        assert sum(kind == "kron (einsum)" for kind in kron._estimator.treatment.values()) == 4
        assert sum(kind == "diag" for kind in kron._estimator.treatment.values()) == 4
    if expected_kind.get(name) == "recurrent":  # kernel, recurrent kernel and bias, the Dense layers too
        assert "diag" not in kinds
    starts = np.cumsum([0] + [int(np.prod(v.shape)) for v in model.trainable_variables])
    blocks = zip(
        kron._estimator.treatment.values(), _kron_blocks_as_dense(kron.curvature), starts[:-1], starts[1:], strict=True
    )
    for kind, dense, start, stop in blocks:
        block = full[start:stop, start:stop]
        expected = np.diag(np.diag(block)) if kind == "diag" else block
        np.testing.assert_allclose(dense, expected, rtol=1e-8, atol=1e-12)


def test_a_single_named_output_is_the_output():
    """keras.Model(inputs, {"logits": ...}) returns a one-entry dict: the same Laplace as a plain output."""
    keras.utils.set_random_seed(15)
    inputs = keras.Input((5,))
    logits = LAYERS.Dense(N_CLASSES)(LAYERS.Dense(4, activation="tanh")(inputs))
    named, plain = keras.Model(inputs, {"logits": logits}), keras.Model(inputs, logits)
    x, y = inputs_for("residual", n=8), np.arange(8) % N_CLASSES
    fitted = [
        lt.Laplace(m, "classification", hessian_structure="kron", subset_of_weights="all").fit((x, y), verbose=False)
        for m in (named, plain)
    ]
    np.testing.assert_array_equal(fitted[0].predict(x, verbose=False), fitted[1].predict(x, verbose=False))


def test_multi_input_data_in_every_form_gives_the_same_fit():
    keras.utils.set_random_seed(6)
    model = two_inputs()
    x, y = inputs_for("two_inputs", n=10), np.arange(10) % N_CLASSES
    from_arrays = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), batch_size=4, verbose=False
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    from_dataset = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        dataset, verbose=False
    )
    for a, b in zip(
        _kron_blocks_as_dense(from_arrays.curvature), _kron_blocks_as_dense(from_dataset.curvature), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    probs = from_arrays.predict(x, verbose=False).numpy()
    report = from_arrays.evaluate(x, y)
    nll = -np.mean(np.log(probs[np.arange(10), y]))
    np.testing.assert_allclose(report.to_dict()["metrics"]["Laplace"]["nll"], nll, rtol=1e-5)
    diagnosis = from_arrays.diagnose((x, y), num_draws=100, seed=0)
    assert diagnosis.n_examples == 10 and np.isfinite(diagnosis.mode_distance)
    with pytest.raises(ValueError, match=r"x\['meta'\]: 9"):
        from_arrays.predict({"image": x["image"], "meta": x["meta"][:9]})


def test_list_inputs_match_dict_inputs():
    keras.utils.set_random_seed(7)
    image, meta = keras.Input((4,)), keras.Input((2,))
    hidden = LAYERS.Concatenate()([LAYERS.Dense(4, activation="tanh")(image), meta])
    listed = keras.Model([image, meta], LAYERS.Dense(N_CLASSES)(hidden))
    named = two_inputs()
    named.set_weights(listed.get_weights())
    x, y = inputs_for("two_inputs", n=8), np.arange(8) % N_CLASSES
    a = lt.Laplace(listed, "classification", hessian_structure="full", subset_of_weights="all").fit(
        ([x["image"], x["meta"]], y), verbose=False
    )
    b = lt.Laplace(named, "classification", hessian_structure="full", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    np.testing.assert_allclose(a.curvature, b.curvature, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("policy", "tolerance"), [("mixed_float16", 3e-2), ("mixed_bfloat16", 1.5e-1)])
def test_mixed_precision_agrees_with_float32(policy, tolerance):
    def build():
        return keras.Sequential(
            [keras.Input((4,)), LAYERS.Dense(6, activation="tanh"), LAYERS.Dense(N_CLASSES, dtype="float32")]
        )

    x = np.random.default_rng(9).normal(size=(12, 4)).astype("float32")
    for _, mixed in _fitted_in_float32_and_mixed(build, policy, x, 8, tolerance):
        assert mixed.dtype == tf.float32


def test_a_grouped_convolution_in_mixed_precision_agrees_with_float32():
    """A grouped convolution's model is looped (TensorFlow's CPU kernels cannot vectorise its
    backward pass), its float16 Dense layer's closed-form Jacobians too."""

    def build():
        inputs = keras.Input((5, 5, 4))
        hidden = LAYERS.GlobalAveragePooling2D()(LAYERS.Conv2D(4, 3, groups=2, activation="tanh")(inputs))
        return keras.Model(inputs, LAYERS.Dense(N_CLASSES)(hidden))

    x = np.random.default_rng(11).normal(size=(10, 5, 5, 4)).astype("float32")
    for reference, mixed in _fitted_in_float32_and_mixed(build, "mixed_float16", x, 10, 3e-2):
        assert not reference.params.vectorize and not mixed.params.vectorize


def test_recurrent_layers_in_mixed_precision_agree_with_float32():
    """The probed LSTM and GRU loops compute in float16 like Keras's own."""

    def build():
        layers = [LAYERS.Embedding(9, 4, mask_zero=True), LAYERS.LSTM(5, return_sequences=True), LAYERS.GRU(4)]
        return keras.Sequential([keras.Input((6,), dtype="int32"), *layers, LAYERS.Dense(N_CLASSES, dtype="float32")])

    x = np.random.default_rng(12).integers(0, 9, (12, 6)).astype("int32")
    for _, mixed in _fitted_in_float32_and_mixed(build, "mixed_float16", x, 12, 3e-2):
        assert uncovered_size(mixed.params, probe_rules(mixed.params)) == 0


def _fitted_in_float32_and_mixed(build, policy: str, x: np.ndarray, seed: int, tolerance: float) -> list:
    """Per structure (diag, kron, lowrank), Laplaces of one model's float32 and mixed-precision
    builds with the same weights, checked to agree in evidence and predictions within ``tolerance``."""
    keras.utils.set_random_seed(seed)
    reference = build()
    keras.mixed_precision.set_global_policy(policy)
    try:
        mixed = build()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    y = np.arange(len(x)) % N_CLASSES
    pairs = []
    for structure in ("diag", "kron", "lowrank"):
        options = {"rank": 5} if structure == "lowrank" else {}
        fitted = [
            lt.Laplace(m, "classification", subset_of_weights="all", hessian_structure=structure, **options).fit(
                (x, y), verbose=False
            )
            for m in (reference, mixed)
        ]
        evidences = [float(la.log_marginal_likelihood()) for la in fitted]
        np.testing.assert_allclose(evidences[1], evidences[0], rtol=tolerance)
        np.testing.assert_allclose(fitted[1].predict(x), fitted[0].predict(x), atol=tolerance)
        pairs.append(fitted)
    return pairs


@pytest.mark.parametrize(
    "make_probabilities",
    [
        lambda inputs: LAYERS.Softmax()(LAYERS.Dense(N_CLASSES)(inputs)),
        lambda inputs: LAYERS.Activation("softmax")(LAYERS.Dense(N_CLASSES)(inputs)),
        lambda inputs: keras.ops.softmax(LAYERS.Dense(N_CLASSES)(inputs)),
        lambda inputs: keras.Sequential([LAYERS.Dense(N_CLASSES), LAYERS.Softmax()])(inputs),
    ],
    ids=["softmax_layer", "activation_layer", "ops_softmax", "nested_model"],
)
def test_a_final_softmax_is_refused(make_probabilities):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, make_probabilities(inputs))
    with pytest.raises(ValueError, match="needs logits"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")


def test_a_subclassed_model_returning_probabilities_is_refused_at_fit():
    class Probabilities(keras.Model):
        def __init__(self):
            super().__init__()
            self.out = LAYERS.Dense(N_CLASSES)

        def call(self, x):
            return keras.ops.softmax(self.out(x))

    model = Probabilities()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model(x)
    with pytest.raises(ValueError, match="outputs are probabilities"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.arange(8) % N_CLASSES), verbose=False
        )


class _ScaledDense(LAYERS.Dense):
    def call(self, inputs):
        return 2.0 * super().call(inputs)


@pytest.mark.parametrize(
    "make_outputs, declared",
    [
        (lambda inputs: LAYERS.Dense(N_CLASSES)(inputs), N_CLASSES),
        (lambda inputs: keras.Sequential([LAYERS.Dense(N_CLASSES)])(inputs), N_CLASSES),
        (lambda inputs: LAYERS.EinsumDense("bi,ik->bk", N_CLASSES)(inputs), N_CLASSES),
        (lambda inputs: LAYERS.Dense(N_CLASSES, activation="relu")(inputs), None),
        (lambda inputs: 2.0 * LAYERS.Dense(N_CLASSES)(inputs), None),
        (lambda inputs: _ScaledDense(N_CLASSES)(inputs), None),
        (lambda inputs: [LAYERS.Dense(N_CLASSES)(inputs), LAYERS.Dense(1)(inputs)], None),
    ],
    ids=["dense", "nested", "einsum_dense", "activation", "scaled", "dense_subclass", "two_outputs"],
)
def test_only_an_affine_output_layer_declares_the_output_count(make_outputs, declared):
    """Where the count is declared, a fit needs no eager forward pass to find it (or to refuse
    probabilities: an affine layer's outputs are logits); elsewhere one counts them, and both agree."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, make_outputs(inputs))
    assert validation.declared_logit_count(model) == declared
    if len(model.outputs) == 1:
        x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
        la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.arange(8) % N_CLASSES), verbose=False
        )
        assert la.n_outputs == model(x).shape[-1] == N_CLASSES


def test_save_load_by_structure_onto_a_reloaded_or_rebuilt_model(tmp_path):
    keras.utils.set_random_seed(10)
    model = two_inputs()
    x, y = inputs_for("two_inputs", n=8), np.arange(8) % N_CLASSES
    output_layer = f"{model.layers[-1].name}/*"
    la = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights=[output_layer])
    la.fit((x, y), verbose=False)
    la.save(tmp_path / "posterior.npz")
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    rebuilt = two_inputs()  # auto-named layers differ from the first model's
    rebuilt.set_weights(model.get_weights())
    assert [v.path for v in rebuilt.trainable_variables] != [v.path for v in model.trainable_variables]
    expected = la.predict(x, verbose=False).numpy()
    for other in (reloaded, rebuilt):
        loaded = lt.load(tmp_path / "posterior.npz", other)
        np.testing.assert_array_equal(loaded.predict(x, verbose=False).numpy(), expected)
        assert loaded.n_params == la.n_params
    different = keras.Model(*_widened_two_inputs())
    with pytest.raises(ValueError, match=r"variable 0 .* is \[4, 5\] float32, saved \[4, 4\] float32"):
        lt.load(tmp_path / "posterior.npz", different)


def test_a_sequential_model_reloaded_from_keras_keeps_the_fast_paths(tmp_path):
    keras.utils.set_random_seed(12)
    model = cnn_with_batchnorm()
    model.save(tmp_path / "cnn.keras")
    reloaded = keras.saving.load_model(tmp_path / "cnn.keras")  # rebuilt layer by layer: stale graph nodes
    assert len(reloaded.layers[1]._inbound_nodes) > 1
    calls = forward_calls(reloaded)
    assert [calls[id(layer)] for layer in reloaded.layers] == [1] * len(reloaded.layers)
    x, y = inputs_for("cnn", n=10), np.arange(10) % N_CLASSES
    fitted = [
        lt.Laplace(m, "classification", hessian_structure="kron", subset_of_weights="all").fit((x, y), verbose=False)
        for m in (model, reloaded)
    ]
    assert fitted[1]._estimator.jacobian_params == 0  # BatchNorm by probes, not per-example Jacobians
    np.testing.assert_allclose(
        float(fitted[1].log_marginal_likelihood()), float(fitted[0].log_marginal_likelihood()), rtol=1e-6
    )
    mlp = keras.Sequential([keras.Input((4,)), LAYERS.Dense(5, activation="tanh"), LAYERS.Dense(N_CLASSES)])
    mlp.save(tmp_path / "mlp.keras")
    reloaded_mlp = lt.Laplace(
        keras.saving.load_model(tmp_path / "mlp.keras"),
        "classification",
        hessian_structure="kron",
        subset_of_weights="all",
    )
    assert layer_factors(reloaded_mlp.params) is not None  # the closed-form kron predictive
    assert dense_output_rule(
        lt.Laplace(
            reloaded_mlp.model, "classification", subset_of_weights="last_layer", hessian_structure="full"
        ).params
    )


class TwoCallsOfOneDense(LAYERS.Layer):
    """A custom layer calling its sublayer twice: invisible in the model's graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = LAYERS.Dense(4, activation="tanh", dtype="float64")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x) + self.inner(0.5 * x)


@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_a_sublayer_called_twice_takes_jacobians_in_the_closed_form_predictive(structure):
    """The closed-form GLM predictive takes the reused Dense layer's weights by per-example Jacobians
    and the output layer's in closed form: J Sigma J^T as with the whole naive Jacobian."""
    keras.utils.set_random_seed(14)
    inputs = keras.Input((3,), dtype="float64")
    model = keras.Model(inputs, LAYERS.Dense(N_CLASSES, dtype="float64")(TwoCallsOfOneDense(dtype="float64")(inputs)))
    x, y = np.random.default_rng(3).normal(size=(7, 3)), np.arange(7) % N_CLASSES
    la = lt.Laplace(model, "classification", hessian_structure=structure, subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    assert la._fitted_view.closed_form
    means, covariances = la.glm_output_distribution(x, verbose=False)
    jacobians = naive_jacobians(model, x)
    expected = np.einsum("nkp,pq,nlq->nkl", jacobians, la.posterior.covariance.numpy(), jacobians)
    np.testing.assert_allclose(means, model(x), rtol=1e-12)
    np.testing.assert_allclose(covariances, expected, rtol=1e-9, atol=1e-12)
    assert [r.layer.name for r in la._fitted_view.layer_factors.factored] == [model.layers[-1].name]


class _UnusedHead(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = LAYERS.Dense(4, activation="tanh"), LAYERS.Dense(N_CLASSES)
        self.head = LAYERS.Dense(2)

    def call(self, x):
        return self.out(self.hidden(x))


def _with_an_unused_head(kind: str) -> keras.Model:
    """A model tracking a built Dense ``head`` its forward pass never calls (an auxiliary head)."""
    if kind == "functional":
        inputs = keras.Input((5,))
        model = keras.Model(inputs, LAYERS.Dense(N_CLASSES)(LAYERS.Dense(4, activation="tanh")(inputs)))
        model.head = LAYERS.Dense(2)
        model.head.build((None, 4))
        return model
    model = _UnusedHead()
    model.head.build((None, 4))
    model(np.zeros((1, 5), "float32"))
    return model


@pytest.mark.parametrize("kind", ["functional", "subclassed"])
def test_weights_the_model_never_calls_keep_their_prior(kind):
    keras.utils.set_random_seed(13)
    model = _with_an_unused_head(kind)
    head = {v.path for v in model.head.trainable_variables}
    if not head <= {v.path for v in model.trainable_variables}:
        pytest.skip("Keras 3.12 (the last for Python 3.10) does not track a layer set on a functional model")
    used = [v.path for v in model.trainable_variables if v.path not in head]
    x, y = inputs_for("residual", n=10), np.arange(10) % N_CLASSES
    for structure in ("diag", "kron", "full"):
        options = {"hessian_structure": structure, "prior_precision": 2.0}
        la = lt.Laplace(model, "classification", subset_of_weights="all", **options).fit(
            (x, y), batch_size=4, verbose=False
        )
        reference = lt.Laplace(model, "classification", subset_of_weights=used, **options)
        reference.fit((x, y), batch_size=4, verbose=False)
        assert head < set(la.params.names)
        pieces = np.split(la.posterior.variance.numpy(), np.cumsum(la.params.sizes)[:-1])
        for name, variance in zip(la.params.names, pieces, strict=True):
            if name in head:
                np.testing.assert_allclose(variance, 0.5, rtol=1e-6)
        np.testing.assert_allclose(la.predict(x, verbose=False), reference.predict(x, verbose=False), rtol=1e-5)


def _widened_two_inputs():
    image, meta = keras.Input((4,), name="image"), keras.Input((2,), name="meta")
    hidden = LAYERS.Concatenate()([LAYERS.Dense(5, activation="tanh")(image), meta])
    return {"image": image, "meta": meta}, LAYERS.Dense(N_CLASSES)(hidden)


def test_memory_guard_covers_kron_lowrank_and_batch_jacobians():
    """Stacked cells have no probe rule: their weights take per-example Jacobians, looped."""
    cells = LAYERS.RNN(LAYERS.StackedRNNCells([LAYERS.LSTMCell(4), LAYERS.GRUCell(3)]))
    model = keras.Sequential([keras.Input((5,), dtype="int32"), LAYERS.Embedding(9, 3), cells, LAYERS.Dense(N_CLASSES)])
    with pytest.raises(MemoryError, match=r"hessian_structure='kron'.*needs about"):
        lt.Laplace(model, "classification", hessian_structure="kron", memory_limit=1000, subset_of_weights="all")
    with pytest.raises(MemoryError, match=r"hessian_structure='lowrank'.*smaller rank"):
        lt.Laplace(
            model, "classification", hessian_structure="lowrank", rank=50, memory_limit=50_000, subset_of_weights="all"
        )
    la = lt.Laplace(model, "classification", hessian_structure="diag", memory_limit=60_000, subset_of_weights="all")
    x, y = inputs_for("lstm", n=64), np.arange(64) % N_CLASSES
    with pytest.raises(MemoryError, match=r"a batch of 64 examples' Jacobians.*smaller batch_size \(at most \d+\)"):
        la.fit((x, y), batch_size=64, verbose=False)


@pytest.mark.parametrize("name", ["cnn", "transformer"])  # the probes vectorised by pfor, and tiled
def test_columns_in_chunks_give_the_same_curvature(name, monkeypatch):
    """Many classes take the probes' backward passes a chunk of columns at a time (here all but one
    at a time: one of the softmax root's two columns, two of the full GGN's three Jacobian columns,
    the last chunk padded with a zero column): the diagonal and full GGN equal the ones built by
    hand, the K-FAC factors those of all columns in one go, and the kron and diag GLM predictives
    (Dense factors and other layers' Jacobians, two outputs at a time) those of naive Jacobians."""
    keras.utils.set_random_seed(1)
    model, x = BUILDERS[name](), inputs_for(name)
    y = np.random.default_rng(2).integers(0, N_CLASSES, N)
    at_once = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), batch_size=4, verbose=False
    )
    chunked_model = BUILDERS[name]()  # a new model: nothing compiled for it yet
    chunked_model.set_weights(model.get_weights())
    sized, whole_chunks = probe_passes.columns_per_chunk, []

    def all_but_one_at_a_time(*args):
        whole_chunks.append(sized(*args))
        return whole_chunks[-1] - 1

    monkeypatch.setattr(probe_passes, "columns_per_chunk", all_but_one_at_a_time)
    fitted = {
        structure: lt.Laplace(
            chunked_model, "classification", hessian_structure=structure, subset_of_weights="all"
        ).fit((x, y), batch_size=4, verbose=False)
        for structure in ("kron", "diag", "full")
    }
    # kron and diag size N_CLASSES - 1 columns, full's Jacobians N_CLASSES (tiled models size them
    # twice: for one tiled pass, then, refused, for the chunks)
    assert len(whole_chunks) >= 3 and sorted(set(whole_chunks)) == [N_CLASSES - 1, N_CLASSES]
    for chunked, whole in zip(
        _kron_blocks_as_dense(fitted["kron"].curvature), _kron_blocks_as_dense(at_once.curvature), strict=True
    ):
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())
    jacobians = naive_jacobians(model, x)
    hessians = output_hessians_np(np.asarray(model(x), np.float64), "classification")
    expected = np.einsum("nkp,nkl,nlq->pq", jacobians, hessians, jacobians)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(fitted["full"].curvature, expected, rtol=2e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(fitted["diag"].curvature, np.diag(expected), rtol=2e-4, atol=1e-6 * scale)
    for structure in ("kron", "diag"):  # the GLM predictive's Dense factors and Jacobian blocks, chunked too
        la = fitted[structure]
        expected = la.posterior.functional_variance(tf.constant(jacobians, la.dtype)).numpy()
        np.testing.assert_allclose(la.glm_output_distribution(x, verbose=False)[1], expected, rtol=1e-4, atol=1e-7)
        assert la._fitted_view.layer_factors.factored  # the factored path, in chunks


def test_a_batch_whose_one_backward_pass_would_not_fit_is_refused(monkeypatch):
    """Chunks of columns bound the probes' memory down to one column; beyond that the batch is too big."""
    monkeypatch.setattr(validation, "default_memory_limit", lambda: 50_000)  # the kron factors fit
    model, x = cnn_with_batchnorm(), inputs_for("cnn", n=64)
    la = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all")
    with pytest.raises(MemoryError, match=r"backward pass of a batch of 64 examples.*smaller batch_size"):
        la.fit((x, np.arange(64) % N_CLASSES), batch_size=64, verbose=False)


class FoldsPositionsIntoTheBatch(keras.Model):
    """A Dense layer on ``(B * T, d)`` rows: built for matrices, yet several rows per example."""

    def __init__(self):
        super().__init__()
        self.per_position = LAYERS.Dense(2, activation="tanh", name="per_position")
        self.head = LAYERS.Dense(N_CLASSES)

    def call(self, x):
        rows = self.per_position(keras.ops.reshape(x, (-1, x.shape[-1])))
        return self.head(keras.ops.reshape(rows, (-1, x.shape[1] * 2)))


def test_a_dense_layer_on_positions_folded_into_the_batch_stops_the_closed_form_predictive():
    """Tracing cannot tell ``(B * T, d)`` rows from ``(B, d)``: the factored predictive checks the
    rows it got and says what to do instead of returning a covariance for each row."""
    model = FoldsPositionsIntoTheBatch()
    x, y = np.random.default_rng(0).normal(size=(6, 3, 4)).astype("float32"), np.arange(6) % N_CLASSES
    model(x)
    la = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    with pytest.raises(ValueError, match=r"'per_position' sees 18 rows for 6 examples.*pred_type='nn'"):
        la.predict(x, verbose=False)
    assert la.predict(x, pred_type="nn", n_samples=2, seed=0, verbose=False).shape == (6, N_CLASSES)


class AveragesFoldedPositions(keras.Model):
    """A Dense layer on ``(B * T, d)`` rows, averaged per example: any number of positions ``T``."""

    def __init__(self):
        super().__init__()
        self.per_position = LAYERS.Dense(2, activation="tanh")
        self.head = LAYERS.Dense(N_CLASSES)

    def call(self, x):
        rows = self.per_position(keras.ops.reshape(x, (-1, x.shape[-1])))
        return self.head(keras.ops.mean(keras.ops.reshape(rows, (-1, x.shape[1], 2)), axis=1))


def test_diag_learns_again_which_layers_see_one_row_per_example_for_new_example_shapes():
    """With one position a Dense layer on folded rows sees one row per example (its factorised
    diagonal applies); a second fit of the same model (whose estimator is shared) on three positions
    must learn that again rather than reuse it. Both diagonals equal the naive GGN's."""
    model, rng, y = AveragesFoldedPositions(), np.random.default_rng(1), np.arange(6) % N_CLASSES
    for positions in (1, 3):
        x = rng.normal(size=(6, positions, 4)).astype("float32")
        model(x)  # built by the first call
        la = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
            (x, y), verbose=False
        )
        jacobians = naive_jacobians(model, x)
        hessians = output_hessians_np(np.asarray(model(x), np.float64), "classification")
        expected = np.einsum("nkp,nkl,nlp->p", jacobians, hessians, jacobians)
        np.testing.assert_allclose(la.curvature, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("structure", ["kron", "diag"])
def test_a_looped_models_dense_head_takes_closed_form_factors(structure):
    """A recurrent layer's weights serve every step, so in the GLM predictive the Dense head alone is
    factored in closed form (`kron_predictive.LayerFactors`) and, the model being looped, its per-output backward passes
    run in a ``tf.map_fn``; the LSTM's weights take per-example Jacobians. Together: J J^T."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5, 2)), LAYERS.LSTM(3), LAYERS.Dense(N_CLASSES)])
    x = np.random.default_rng(4).normal(size=(N, 5, 2)).astype("float32")
    y = np.random.default_rng(5).integers(0, N_CLASSES, N)
    la = lt.Laplace(
        model, "classification", hessian_structure=structure, prior_precision=HUGE_PRIOR, subset_of_weights="all"
    )
    la.fit((x, y), batch_size=4, verbose=False)
    _, f_var = la.glm_output_distribution(x, verbose=False)
    assert not la.params.vectorize and la._fitted_view.layer_factors is not None
    jacobians = naive_jacobians(model, x)
    expected = np.einsum("nkp,nlp->nkl", jacobians, jacobians)
    np.testing.assert_allclose(HUGE_PRIOR * f_var.numpy(), expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
