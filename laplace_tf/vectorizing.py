"""Whether per-example work on a model may be vectorised with ``pfor``, and the map that does it.

Per-example Jacobians and gradients are fastest vectorised over examples (``tf.vectorized_map``,
``pfor``), but four kinds of model cannot take it:

* recurrent layers (LSTM, GRU, SimpleRNN, ConvLSTM, and wrappers such as ``Bidirectional``) run
  a ``tf.while_loop`` over time steps whose ``TensorList`` state ``pfor`` cannot vectorise;
* text preprocessing inside the model (``TextVectorization``, or any string input): one example's
  words split into a ragged row whose length ``pfor`` cannot merge across examples;
* grouped convolutions (``groups > 1``): TensorFlow's CPU kernels refuse their backward pass
  vectorised ("Gradients for grouped convolutions are not supported") in half precision, and in
  every precision where TensorFlow runs without oneDNN (which it turns on by default on some CPUs
  only: not on an AMD EPYC with AVX2, for one), so such models loop on every machine, not on some;
* layers that multiply rank-3 or higher inputs by a kernel (a Dense layer on sequences,
  ``EinsumDense``, ``MultiHeadAttention``): vectorised, these become rank-4 by rank-2 batched
  matrix products, which TensorFlow 2.21's oneDNN kernel mis-strides in float32, corrupting the
  heap (tensorflow/tensorflow#117700), and whose ``Tensordot`` reshapes ``pfor`` mis-converts
  for sequences of length one.

For those models `map_examples` runs the same function example by example with
``tf.map_fn`` (inside the compiled graph), Jacobians loop over outputs instead of using
``pfor``, and the layer probes (which cover LSTM, GRU and SimpleRNN layers) run on the batch tiled
once per column: slower, exact, and silent.

Example:
    ```python
    >>> lstm = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 4),
    ...                          keras.layers.LSTM(5), keras.layers.Dense(3)])
    >>> can_vectorize(lstm)
    False
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from laplace_tf.networks.inputs import declared_inputs

PARALLEL_ITERATIONS = 8


def can_vectorize(model: keras.Model) -> bool:
    """Whether ``pfor`` may vectorise per-example work on ``model`` (see the module doc)."""
    layers = list(model._flatten_layers(include_self=False))
    recurrent = any(isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) for layer in layers)
    text = any(isinstance(layer, keras.layers.TextVectorization) for layer in layers) or _takes_text(model)
    grouped = any(_is_grouped_convolution(layer) for layer in layers)
    return not (recurrent or text or grouped) and not any(_multiplies_sequences(layer) for layer in layers)


def _is_grouped_convolution(layer: keras.layers.Layer) -> bool:
    """A convolution whose channels are split into groups (RegNet, ResNeXt)."""
    return isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) and layer.groups > 1


def _takes_text(model: keras.Model) -> bool:
    """Whether the model declares a string input (a subclassed model declares none)."""
    return any(tensor.dtype == "string" for tensor in declared_inputs(model) or [])


def map_examples(fn: Callable, elems: Any, vectorize: bool, signature: Any = None) -> Any:
    """``fn`` applied to each slice of ``elems`` along the first axis, stacked: vectorised or looped.

    Looped, ``fn``'s output ``signature`` (a structure of ``tf.TensorSpec``) is needed; without it,
    ``fn`` is traced once more on the first slice to learn it (a backward pass through a recurrent
    loop takes a tenth of a second to trace).
    """
    if vectorize:
        return tf.vectorized_map(fn, elems)
    if signature is None:
        example = tf.nest.map_structure(lambda t: t[0], elems)
        signature = tf.nest.map_structure(tf.TensorSpec.from_tensor, fn(example))
    return tf.map_fn(fn, elems, fn_output_signature=signature, parallel_iterations=PARALLEL_ITERATIONS)


def _multiplies_sequences(layer: keras.layers.Layer) -> bool:
    """A float kernel multiplying rank >= 3 inputs (or inputs of unknown rank inside EinsumDense)."""
    if isinstance(layer, keras.layers.EinsumDense):
        return True
    if isinstance(layer, keras.layers.Dense):
        rank = input_rank(layer)
        return rank is None or rank >= 3
    return False


def input_rank(layer: keras.layers.Layer) -> int | None:
    """The rank of the inputs the layer was built for (``None`` if unknown)."""
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    shape = shapes.get("input_shape", next(iter(shapes.values()), None))
    if shape is not None and not isinstance(shape, dict):
        return len(shape)
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):
        return None
