"""Per-batch functions compiled once per input signature, for batches of any size.

Example:
    ```python
    >>> batch = compile_for_batches(lambda theta, x, y: ..., model)
    >>> batch(theta, x_batch, y_batch)      # traced on the first call with this signature
    ```
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from laplace_tf.compiled import separate_tf_function
from laplace_tf.networks.curvature.probe_passes import expected_batch
from laplace_tf.networks.inputs import batch_spec, declared_example_shapes, free_example_axes, free_extent, n_examples


def compile_for_batches(fn: Callable, model: keras.Model | None = None) -> Callable:
    """``fn(theta, x, *rest)`` compiled once per input signature, for any batch size (traced on the
    first call with that signature, whose batch size sizes the chunks of `probe_passes.run_probes`).

    ``x`` may be a structure of tensors (a model with several inputs). The axes of ``x`` that the
    ``model`` declares free (sequences of any length) are free in the signature too: batches padded
    to different lengths share one function, traced for lengths up to the power of two at or above
    the first batch's, and traced again only for a longer batch, since the chunks of columns (and
    the memory guard) are sized for the longest length a function serves. Inputs of another
    example shape or dtype (a second `Laplace` on the same model fed differently) get a function of
    their own instead of failing to bind.
    """
    compiled: dict[tuple, list[tuple[int, Callable]]] = {}
    declared = declared_example_shapes(model)  # read now: compiled functions must not keep the model alive

    def call(theta: tf.Tensor, *batch: tf.Tensor):
        free = free_example_axes(batch[0], declared)
        key, extent = _signature_key(theta, batch, free), free_extent(batch[0], free)
        traced = compiled.setdefault(key, [])
        for longest, function in traced:
            if extent <= longest:
                return function(theta, *batch)
        longest = 1 << max(extent - 1, 0).bit_length()  # the power of two at or above
        signature = [tf.TensorSpec(theta.shape, theta.dtype), batch_spec(batch[0], free)]
        function = separate_tf_function(fn, input_signature=signature + [batch_spec(t) for t in batch[1:]])
        traced.append((longest, function))
        with expected_batch(n_examples(batch[0]), longest):  # traced now: chunks of columns sized for this batch
            return function(theta, *batch)

    return call


def _signature_key(theta: tf.Tensor, batch: tuple, free: list[tuple[int, ...]]) -> tuple:
    """What a compiled function's input signature depends on: every leaf's dtype and shape (but the
    batch axis and the ``free`` axes of ``batch[0]``), and the nesting of structured inputs."""
    specs = tf.nest.flatten(batch_spec(batch[0], free)) + tf.nest.flatten(batch_spec(batch[1:]))
    key = (theta.dtype, theta.shape[0], *((spec.dtype, tuple(spec.shape[1:])) for spec in specs))
    if any(tf.nest.is_nested(t) for t in batch):  # structured inputs: their nesting (dict keys, list lengths) too
        key += (repr(tf.nest.map_structure(lambda _: None, batch)),)
    return key
