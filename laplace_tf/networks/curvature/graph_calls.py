r"""How many times one forward pass of a functional Keras model calls each of its layers.

The closed-form last-layer predictive (`last_layer`) needs its Dense output layer called exactly
once, which it must know before any forward pass runs. Keras keeps a
layer's calls in ``layer._inbound_nodes``, but that list also holds nodes of other graphs: a
``Sequential`` model reloaded from ``.keras`` is rebuilt one layer at a time, leaving up to one
stale node per later layer, and a layer reused by a second model carries that model's node too.
Counting the nodes of the model's own graph instead (``_nodes_by_depth``; a nested functional
model's nodes once per call of that model; a layer's sublayers, such as an attention layer's
projections, as often as the layer) gives the calls of this model's forward pass only.

A subclassed model has no graph to read, nor does a custom layer calling its sublayers; their
calls are checked while recording instead (`curvature.kfac_layers.LayerRule.probe`).

Example:
    ```python
    >>> reloaded = keras.saving.load_model("cnn.keras")
    >>> called_once(forward_calls(reloaded), reloaded.layers[0])
    True
    ```
"""

from __future__ import annotations

from collections import Counter

import keras


def forward_calls(model: keras.Model) -> dict[int, int] | None:
    """``id(layer)`` -> its calls in one forward pass of ``model``, for every layer the model's
    functional graph reaches (a layer it does not reach is called 0 times); ``None`` for a
    subclassed model, whose calls are unknown until it runs."""
    graph = _functional_graph(model)
    if graph is None:
        return None
    calls: Counter[int] = Counter()
    _count(graph, 1, calls)
    return dict(calls)


def called_once(calls: dict[int, int] | None, layer: keras.layers.Layer) -> bool:
    """Whether one forward pass calls ``layer`` once (assumed when unknown: checked while recording)."""
    return calls is None or calls.get(id(layer), 0) == 1


def _functional_graph(model: keras.layers.Layer) -> keras.Model | None:
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    return graph if graph is not None and hasattr(graph, "_nodes_by_depth") else None


def _count(graph: keras.Model, times: int, calls: Counter[int]) -> None:
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            operation = node.operation
            calls[id(operation)] += times
            inner = _functional_graph(operation) if isinstance(operation, keras.Model) else None
            if inner is not None:
                _count(inner, times, calls)
            elif isinstance(operation, keras.layers.Layer):
                for sublayer in operation._flatten_layers(include_self=False):
                    calls[id(sublayer)] += times
