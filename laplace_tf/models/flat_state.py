"""A structure of named tensors (a model's free variables) as one flat vector, and back.

The parts are flattened in ``tf.nest`` order (dict keys sorted) and row-major, so the flat vector
of ``{"b": (2,), "sigma": ()}`` is ``[b[0], b[1], sigma]``: the row names of the ``fit`` group.

Example:
    ```python
    >>> state = FlatState({"b": tf.TensorShape([2]), "sigma": tf.TensorShape([])}, {"b": "b", "sigma": "sigma"})
    >>> state.row_names
    ['b[0]', 'b[1]', 'sigma']
    >>> state.unflatten(tf.constant([1.0, 2.0, 3.0]))["sigma"]
    <tf.Tensor: shape=(), dtype=float32, numpy=3.0>
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


class FlatState:
    """The flat view of a structure of tensors with known shapes.

    Args:
      shapes: the structure (tensor, list, tuple, dict or namedtuple) of each part's shape.
      names: the same structure holding each part's name.
    """

    def __init__(self, shapes: Any, names: Any):
        self.structure = shapes
        self.shapes = [tuple(tf.TensorShape(s).as_list()) for s in tf.nest.flatten(shapes, expand_composites=False)]
        self.names: list[str] = [str(n) for n in tf.nest.flatten(names)]
        if len(self.names) != len(self.shapes) or len(set(self.names)) != len(self.names):
            raise ValueError(f"Each part needs one distinct name; got names {self.names} for {len(self.shapes)} parts.")
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.size = int(sum(self.sizes))

    @property
    def row_names(self) -> list[str]:
        """One name per flat entry: ``"b[0]"``, ``"L[1,0]"``, or ``"sigma"`` for a scalar."""
        rows = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            if not shape:
                rows.append(name)
                continue
            for index in np.ndindex(*shape):
                rows.append(f"{name}[{','.join(map(str, index))}]")
        return rows

    def flatten(self, state: Any) -> tf.Tensor:
        """A structure of tensors with optional leading batch dims ``(...)`` to ``(..., D)``."""
        parts = tf.nest.flatten(state)
        batch = tf.shape(parts[0])[: tf.rank(parts[0]) - len(self.shapes[0])]
        return tf.concat([tf.reshape(p, tf.concat([batch, [-1]], 0)) for p in parts], axis=-1)

    def unflatten(self, flat: tf.Tensor) -> Any:
        """``(..., D)`` to the structure, each part shaped ``(..., *shape)``."""
        batch = tf.shape(flat)[:-1]
        pieces = tf.split(flat, self.sizes, axis=-1)
        parts = [tf.reshape(p, tf.concat([batch, shape], 0)) for p, shape in zip(pieces, self.shapes, strict=True)]
        return tf.nest.pack_sequence_as(self.structure, parts)

    def named(self, state: Any) -> dict[str, Any]:
        """The structure's parts as a dict from name to part."""
        return dict(zip(self.names, tf.nest.flatten(state), strict=True))
