"""Keras twins of `architectures_torch.py`, loaded with the torch ``state_dict`` of a problem file.

torch stores a Linear weight as ``(out, in)`` (Keras: ``(in, out)``), a convolution as
``(out, in, kh, kw)`` on channels-first images (Keras: ``(kh, kw, in, out)``, channels-last, so
the Dense after ``Flatten`` sees its inputs in another order), the attention projections as one
``(3 d, d)`` matrix (Keras: a ``(d, heads, head_dim)`` kernel each), and LSTM gates in the same
order (i, f, g, o) as Keras.
"""

import keras
import numpy as np
from sizes import CLASSES, EMBEDDING, HEADS, HIDDEN, LAYER_NORM_EPSILON, SEQUENCE_LENGTH, VOCABULARY


def build(name: str, state: dict, dtype: str, length: int = SEQUENCE_LENGTH) -> keras.Model:
    """The Keras model ``name`` with the torch weights ``state`` (keys without the ``torch.`` prefix)."""
    builders = {
        "regression": _regression,
        "cnn": _cnn,
        "cnn100": _cnn100,
        "lstm": _lstm,
        "transformer": _transformer,
        "reward": _reward,
    }
    model, weights = builders[name](state, dtype, length)
    for layer_name, values in weights.items():
        model.get_layer(layer_name).set_weights([np.asarray(v, dtype) for v in values])
    return model


def _linear(state: dict, prefix: str) -> list:
    return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]


def _regression(state: dict, dtype: str, length: int) -> tuple:
    model = keras.Sequential(
        [
            keras.Input((10,), dtype=dtype),
            keras.layers.Dense(50, activation="tanh", name="hidden", dtype=dtype),
            keras.layers.Dense(1, name="out", dtype=dtype),
        ]
    )
    return model, {"hidden": _linear(state, "0"), "out": _linear(state, "2")}


def _reward(state: dict, dtype: str, length: int) -> tuple:
    """The item model of the torch PairwiseReward (laplace-tf forms the pairs itself)."""
    model = keras.Sequential(
        [
            keras.Input((64,), dtype=dtype),
            keras.layers.Dense(32, activation="tanh", name="hidden", dtype=dtype),
            keras.layers.Dense(1, name="out", dtype=dtype),
        ]
    )
    return model, {"hidden": _linear(state, "net.0"), "out": _linear(state, "net.2")}


def _cnn(state: dict, dtype: str, length: int) -> tuple:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), dtype=dtype),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1", dtype=dtype),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2", dtype=dtype),
            keras.layers.Flatten(dtype=dtype),
            keras.layers.Dense(10, name="out", dtype=dtype),
        ]
    )
    return model, _conv_weights(state, channels=16, size=4, classes=10, dense="5")


def _cnn100(state: dict, dtype: str, length: int) -> tuple:
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3), dtype=dtype),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv1", dtype=dtype),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2", dtype=dtype),
            keras.layers.MaxPooling2D(4, dtype=dtype),
            keras.layers.Flatten(dtype=dtype),
            keras.layers.Dense(100, name="out", dtype=dtype),
        ]
    )
    return model, _conv_weights(state, channels=16, size=7, classes=100, dense="6")


def _conv_weights(state: dict, channels: int, size: int, classes: int, dense: str) -> dict:
    """Two convolutions (torch modules 0 and 2) and the Dense after ``Flatten``: torch flattens
    ``(c, h, w)``, Keras ``(h, w, c)``."""
    kernel = state[f"{dense}.weight"].T.reshape(channels, size, size, classes).transpose(1, 2, 0, 3)
    return {
        "conv1": [state["0.weight"].transpose(2, 3, 1, 0), state["0.bias"]],
        "conv2": [state["2.weight"].transpose(2, 3, 1, 0), state["2.bias"]],
        "out": [kernel.reshape(-1, classes), state[f"{dense}.bias"]],
    }


def _lstm(state: dict, dtype: str, length: int) -> tuple:
    model = keras.Sequential(
        [
            keras.Input((length,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, EMBEDDING, name="embedding", dtype=dtype),
            keras.layers.LSTM(HIDDEN, use_bias=False, name="lstm", dtype=dtype),
            keras.layers.Dense(CLASSES, name="out", dtype=dtype),
        ]
    )
    return model, {
        "embedding": [state["embedding.weight"]],
        "lstm": [state["lstm.weight_ih_l0"].T, state["lstm.weight_hh_l0"].T],
        "out": _linear(state, "out"),
    }


def _transformer(state: dict, dtype: str, length: int) -> tuple:
    tokens = keras.Input((length,), dtype="int32")
    embedded = keras.layers.Embedding(VOCABULARY, EMBEDDING, name="embedding", dtype=dtype)(tokens)
    head_dim = EMBEDDING // HEADS
    attended = keras.layers.MultiHeadAttention(HEADS, head_dim, name="attention", dtype=dtype)(embedded, embedded)
    norm = {"epsilon": LAYER_NORM_EPSILON, "dtype": dtype}
    hidden = keras.layers.LayerNormalization(name="norm1", **norm)(embedded + attended)
    inner = keras.layers.Dense(2 * EMBEDDING, activation="relu", name="feed_forward1", dtype=dtype)(hidden)
    feed_forward = keras.layers.Dense(EMBEDDING, name="feed_forward2", dtype=dtype)(inner)
    hidden = keras.layers.LayerNormalization(name="norm2", **norm)(hidden + feed_forward)
    pooled = keras.layers.GlobalAveragePooling1D(dtype=dtype)(hidden)
    model = keras.Model(tokens, keras.layers.Dense(CLASSES, name="out", dtype=dtype)(pooled))
    projections = np.split(state["attention.in_proj_weight"], 3)  # query, key, value: (d_out, d_in) each
    biases = np.split(state["attention.in_proj_bias"], 3)
    attention = []
    for weight, bias in zip(projections, biases, strict=True):
        attention += [weight.T.reshape(EMBEDDING, HEADS, head_dim), bias.reshape(HEADS, head_dim)]
    attention += [
        state["attention.out_proj.weight"].T.reshape(HEADS, head_dim, EMBEDDING),
        state["attention.out_proj.bias"],
    ]
    return model, {
        "embedding": [state["embedding.weight"]],
        "attention": attention,
        "norm1": [state["norm1.weight"], state["norm1.bias"]],
        "feed_forward1": _linear(state, "feed_forward1"),
        "feed_forward2": _linear(state, "feed_forward2"),
        "norm2": [state["norm2.weight"], state["norm2.bias"]],
        "out": _linear(state, "out"),
    }
