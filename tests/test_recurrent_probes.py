"""Recurrent layers' probe rules (`curvature.recurrent_layers`) in the configurations the real-model
tests do not build: initial states handed from an encoder, returned states, a bare
``keras.layers.RNN`` around a cell without bias. Their Jacobians must equal those a GradientTape
takes through the Keras model, one example at a time."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, naive_jacobians

import laplace_tf as lt
from laplace_tf.curvature.diag_probes import probe_rules
from laplace_tf.curvature.kfac_layers import uncovered_size
from laplace_tf.curvature.probed_jacobians import jacobians_function

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
    params = lt.Laplace(model, "classification").params
    assert uncovered_size(params, probe_rules(params)) == 0
    f, jacobians = tf.function(jacobians_function(params))(params.theta, tf.constant(x))
    np.testing.assert_allclose(f, model(x, training=False), rtol=1e-5, atol=1e-6)
    expected = naive_jacobians(model, x)
    np.testing.assert_allclose(jacobians, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
