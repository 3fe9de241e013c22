"""Which layer with weights a model's forward pass calls last: its output layer.

Sequential and functional models list their variables in the order of their graph, so the last
variable's layer is the output layer. A subclassed model lists them in the order its
``__init__`` created the layers, which need not be the order ``call`` uses them
(``self.head = Dense(3)`` before ``self.body = Dense(8)``, called as ``self.head(self.body(x))``).
For such a model, one forward pass on zeros of the shape it was built for (one example; empty
strings for a model taking text) records which layer with weights starts last.

Example:
    ```python
    >>> last_called_layer_path(subclassed)     # "my_model/head", though "body" was created last
    ```
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf


def last_called_layer_path(model: keras.Model, call_kwargs: dict[str, Any]) -> str | None:
    """The path of the last layer with trainable weights that ``model``'s forward pass (called with
    ``call_kwargs``, such as ``training=False``) calls, for a model without a functional graph;
    ``None`` where the variables' order tells (a graph) or the model cannot be run on zeros of the
    shape it was built for (the caller keeps that order)."""
    from laplace_tf.networks.curvature.graph_calls import forward_calls  # here: the curvature package imports params

    if forward_calls(model) is not None:
        return None
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:  # built with several arguments, or none recorded
        return None
    owners = {variable.path.rsplit("/", 1)[0] for variable in model.trainable_variables}
    layers = [layer for layer in model._flatten_layers(include_self=False) if layer.path in owners]
    for dtype in (tf.float32, tf.string):  # numbers (token ids too: an Embedding casts), else text
        called: list[str] = []
        with _noting_calls(layers, called):
            try:
                model(_zeros(next(iter(shapes.values())), dtype), **call_kwargs)
            except Exception:  # any failure: try text, then the variables' order stands (a fit reports the error)
                continue
        return called[-1] if called else None
    return None


def _zeros(shape: Any, dtype: tf.DType) -> Any:
    """One example of zeros (``""`` for text; a batch of one) in the structure of ``shape``."""
    if isinstance(shape, dict):
        return {key: _zeros(value, dtype) for key, value in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and all(isinstance(s, (list, tuple, dict)) for s in shape):
        return [_zeros(s, dtype) for s in shape]
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    return tf.zeros([1, *(1 if extent is None else extent for extent in shape[1:])], dtype=dtype)


@contextlib.contextmanager
def _noting_calls(layers: list, called: list[str]) -> Iterator[None]:
    """Temporarily has each layer append its path to ``called`` as it starts a call."""
    for layer in layers:
        object.__setattr__(layer, "call", _noted(layer, layer.call, called))
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")


def _noted(layer: keras.layers.Layer, call: Any, called: list[str]) -> Any:
    def noted_call(*args: Any, **kwargs: Any) -> Any:
        called.append(layer.path)
        return call(*args, **kwargs)

    return noted_call
