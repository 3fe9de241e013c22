"""Recurrent layers' probe rules (`curvature.recurrent_layers`) in the configurations the real-model
tests do not build: initial states handed from an encoder, returned states, a bare
``keras.layers.RNN`` around a cell without bias. Their Jacobians must equal those a GradientTape
takes through the Keras model, one example at a time."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, naive_jacobians, output_hessians_np

import laplace_tf as lt
from laplace_tf.networks.curvature.diag_probes import probe_rules
from laplace_tf.networks.curvature.kfac_layers import uncovered_size
from laplace_tf.networks.curvature.probed_jacobians import jacobians_function

LAYERS = keras.layers


def encoder_decoder() -> keras.Model:
    """An LSTM encoder whose returned states start a GRU decoder (seq2seq)."""
    sequence = keras.Input((5, 2))
    summary, state, carry = LAYERS.LSTM(3, return_state=True)(sequence)
    decoded = LAYERS.GRU(3)(LAYERS.RepeatVector(2)(summary), initial_state=state)
    return keras.Model(sequence, LAYERS.Dense(N_CLASSES)(LAYERS.Concatenate()([decoded, carry])))


def bare_cell() -> keras.Model:
    cell = LAYERS.GRUCell(3, use_bias=False)
    return keras.Sequential([keras.Input((5, 2)), LAYERS.RNN(cell), LAYERS.Dense(N_CLASSES)])


@pytest.mark.parametrize("build", [encoder_decoder, bare_cell])
def test_probed_recurrent_jacobians_equal_the_naive_ones(build):
    keras.utils.set_random_seed(4)
    model = build()
    for variable in model.trainable_variables:  # larger than the initial weights: saturating gates
        variable.assign(np.random.default_rng(5).normal(size=variable.shape) * 0.8)
    x = np.random.default_rng(6).normal(size=(6, 5, 2)).astype("float32")
    params = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").params
    assert uncovered_size(params, probe_rules(params)) == 0
    f, jacobians = tf.function(jacobians_function(params))(params.theta, tf.constant(x))
    np.testing.assert_allclose(f, model(x, training=False), rtol=1e-5, atol=1e-6)
    expected = naive_jacobians(model, x)
    np.testing.assert_allclose(jacobians, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def _unrolled(model: keras.Model, tokens: np.ndarray) -> tuple:
    """The model (Embedding with a mask, LSTM or reset_after GRU, Dense) written out step by step
    (from the last step, for ``go_backwards``) from its weights, watching each step's input
    projection x_t W + b and recurrent product h_{t-1} U (+ b): outputs, the steps' inputs x_t,
    previous states h_{t-1} and which steps ran, and the per-example Jacobians of the outputs in
    both products, ``(N, K, T, gates)`` each, all in the order the steps ran."""
    embedding, cell, dense = np.asarray(model.layers[0].embeddings), model.layers[1].cell, model.layers[2]
    kernel, recurrent_kernel, bias = (tf.constant(np.asarray(v)) for v in cell.weights)
    units, steps = cell.units, tokens.shape[1]
    is_gru = isinstance(cell, LAYERS.GRUCell)
    input_bias, recurrent_bias = (bias[0], bias[1]) if is_gru else (bias, 0.0)
    h = c = tf.zeros([len(tokens), units], tf.float64)
    inputs, previous, projections, products = [], [], [], []
    with tf.GradientTape(persistent=True) as tape:
        order = range(steps - 1, -1, -1) if model.layers[1].go_backwards else range(steps)
        for t in order:
            x_t = tf.constant(np.stack([embedding[k] for k in tokens[:, t]]))
            projection, product = x_t @ kernel + input_bias, h @ recurrent_kernel + recurrent_bias
            tape.watch([projection, product])
            inputs.append(x_t), previous.append(h), projections.append(projection), products.append(product)
            ran = tf.constant(tokens[:, t : t + 1] != 0)
            if is_gru:
                (x_z, x_r, x_h), (u_z, u_r, u_h) = tf.split(projection, 3, -1), tf.split(product, 3, -1)
                update, reset = tf.sigmoid(x_z + u_z), tf.sigmoid(x_r + u_r)
                new_h = update * h + (1 - update) * tf.tanh(x_h + reset * u_h)
            else:
                gate_in, forget, candidate, gate_out = tf.split(projection + product, 4, -1)
                new_c = tf.sigmoid(forget) * c + tf.sigmoid(gate_in) * tf.tanh(candidate)
                new_h = tf.sigmoid(gate_out) * tf.tanh(new_c)
                c = tf.where(ran, new_c, c)
            h = tf.where(ran, new_h, h)
        f = h @ tf.constant(np.asarray(dense.kernel)) + tf.constant(np.asarray(dense.bias))
    jacobians = [np.stack([tape.batch_jacobian(f, z) for z in zs], 2) for zs in (projections, products)]
    ran = np.stack([tokens[:, t] != 0 for t in order], 1)  # in the order the steps ran
    return f.numpy(), np.stack(inputs, 1), np.stack(previous, 1), ran, jacobians


@pytest.mark.parametrize(
    ("cell", "approx"),
    [("lstm", "expand"), ("gru", "expand"), ("lstm_backwards", "expand"), ("lstm", "reduce"), ("gru", "reduce")],
)
def test_recurrent_kron_factors_equal_those_of_a_hand_unrolled_loop(cell, approx, tmp_path):
    """kron's blocks of an LSTM's (also running backwards) and a reset_after GRU's kernels on padded
    (masked) sequences, over two batches, from a loop written out by hand. Expand: A averages
    x_t x_t^T (kernel) and h_{t-1} h_{t-1}^T (recurrent kernel) over the steps that ran, and G sums
    J^T Lambda J over steps, for the Jacobians at each weight's own product (the bias: both stacked
    for the GRU's two rows). Reduce: A averages xbar xbar^T over examples, xbar an example's mean
    input over its steps that ran, and G sums (sum_t J)^T Lambda (sum_t J) over examples."""
    keras.utils.set_random_seed(8)
    layer = (
        LAYERS.GRU(3, dtype="float64")
        if cell == "gru"
        else LAYERS.LSTM(3, go_backwards=cell != "lstm", dtype="float64")
    )
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            LAYERS.Embedding(7, 2, mask_zero=True, dtype="float64"),
            layer,
            LAYERS.Dense(N_CLASSES, dtype="float64"),
        ]
    )
    for variable in model.trainable_variables:
        variable.assign(np.random.default_rng(9).normal(size=variable.shape) * 0.8)
    tokens = np.random.default_rng(10).integers(1, 7, (6, 4)).astype("int32")
    tokens[[0, 2, 3], -2:] = 0  # padded
    tokens[4, -1] = 0
    y = np.arange(6) % N_CLASSES
    la = lt.Laplace(model, "classification", hessian_structure="kron", kfac_approx=approx, subset_of_weights="all")
    la.fit((tokens, y), batch_size=4, verbose=False)
    f, inputs, previous, ran, (at_projection, at_product) = _unrolled(model, tokens)
    np.testing.assert_allclose(f, model(tokens), rtol=1e-10)
    hessians = output_hessians_np(f, "classification")
    if approx == "expand":  # (steps that ran, size), and the Jacobians step by step
        ran_inputs, ran_previous = inputs[ran], previous[ran]
    else:  # (examples, size): each example's mean over its steps that ran, and the steps' Jacobians summed
        ran_inputs, ran_previous = ((t * ran[..., None]).sum(1) / ran.sum(1, keepdims=True) for t in (inputs, previous))
        at_projection, at_product = (j.sum(2, keepdims=True) for j in (at_projection, at_product))

    def summed(jacobians):
        return np.einsum("nktg,nkl,nlth->gh", jacobians, hessians, jacobians)

    stacked = np.concatenate([at_projection, at_product], -1) if cell == "gru" else at_projection
    expected = {
        "kernel": (ran_inputs.T @ ran_inputs / len(ran_inputs), summed(at_projection)),
        "recurrent_kernel": (ran_previous.T @ ran_previous / len(ran_previous), summed(at_product)),
        "bias": (np.ones((1, 1)), summed(stacked)),
    }
    blocks = dict(zip(la.params.names, la.curvature.blocks, strict=True))
    for name, (input_factor, output_factor) in expected.items():
        block = blocks[f"{model.layers[1].cell.path}/{name}"]
        assert la._estimator.treatment[f"{model.layers[1].cell.path}/{name}"].startswith("kron (recurrent")
        np.testing.assert_allclose(block.input_factor, input_factor, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(block.output_factor, output_factor, rtol=1e-8, atol=1e-12)
    reloaded = lt.load(la.save(tmp_path / "lstm.npz"), model)  # the sums saved and read back
    assert reloaded.options["kfac_approx"] == approx
    for saved, block in zip(reloaded.curvature.blocks, la.curvature.blocks, strict=True):
        np.testing.assert_array_equal(saved.output_factor, block.output_factor)
    older = {key: value for key, value in la._sums.items() if key != "recurrent"}  # diagonal recurrent blocks
    with pytest.raises(ValueError, match="0 recurrent Kronecker blocks where this model's kron curvature has 3"):
        la._estimator.finalize(older)
