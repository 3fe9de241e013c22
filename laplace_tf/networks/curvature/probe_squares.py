r"""The exact GGN (or empirical Fisher) diagonal of a probed layer's weights.

A probe (`curvature.kfac_layers`, `curvature.norm_layers`) records a layer's inputs and the
gradients $g_{ntc}$ of $v_{nc}^\top f_n$ at every position $t$ of its pre-activation output,
for the columns $v_{nc}$ of a square root of the output Hessian (the loss gradient for the
empirical Fisher). Example $n$'s gradient in a kernel is $\sum_t a_{nt} g_{ntc}^\top$, so

$$
\operatorname{diag} = \sum_{n, c} \Big(\sum_t a_{nt} g_{ntc}^\top\Big)^{\odot 2},
$$

which for one position per example (a Dense layer on matrices) factorises into
$\sum_n (a_n \odot a_n) (\sum_c g_{nc} \odot g_{nc})^\top$. Positions are sequence steps, image
patches, the calls of a shared layer and the two items of a preference pair: a layer's input rows
are grouped by example, example-major, so ``(rows, ...)`` reshapes to ``(examples, positions, ...)``.
`rows_grouped_by_example` checks what can be checked while tracing (the leading axis is the batch's).
An Embedding's rows are sums over the positions holding the same token (for the diagonal, found
with ``tf.unique`` instead of forming every example's gradient).

Example:
    ```python
    >>> pieces = squared_gradient_sums(rule, gradients, examples, tf.float64)
    >>> pieces[rule.kernel.path].shape        # (d_in * d_out,), like the flattened kernel
    ```
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from laplace_tf.networks.curvature.depthwise_layers import depthwise_gradients
from laplace_tf.networks.curvature.kfac_layers import columns_by_example
from laplace_tf.networks.curvature.recurrent_layers import recurrent_gradients


def rows_grouped_by_example(rule: Any, examples: int | None) -> bool:
    """Whether every recorded call's leading axis can be the batch's, as far as tracing shows: of
    unknown size (as the batch's while tracing), or a multiple of the static number of examples.
    A layer applied across examples (time-major, say) has a known leading size and is not."""
    return all(
        probe.inputs.shape[0] is None or (examples is not None and probe.inputs.shape[0] % examples == 0)
        for probe in rule.probes
    )


def per_example_gradients(
    rule: Any, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType
) -> dict[str, tf.Tensor]:
    """Variable path -> every example's gradient ``(C, examples, size)`` (flattened like the variable).

    Args:
      rule: a `LayerRule`, `ScaleShiftRule` or `DepthwiseRule` whose probes recorded this batch.
      gradients: per recorded call, ``(C, rows, ..., outputs)``.
      examples: the number of examples the rows group into.
    """
    if rule.kind == "depthwise":
        return depthwise_gradients(rule, gradients, examples, dtype)
    if rule.kind == "recurrent":
        return recurrent_gradients(rule, gradients, examples, dtype)
    if rule.kind == "scale_shift":
        width = int(rule.probes[0].inputs.shape[-1])
        inputs = tf.concat([_by_example(p.inputs, examples, width, dtype) for p in rule.probes], 1)
        outputs = tf.concat([_by_example(g, examples, width, dtype, columns=True) for g in gradients], 2)
        pieces = {}
        if rule.scale is not None:
            pieces[rule.scale.path] = tf.reduce_sum(outputs * inputs, 2)
        if rule.shift is not None:
            pieces[rule.shift.path] = tf.reduce_sum(outputs, 2)
        return pieces
    outputs = tf.concat([_by_example(g, examples, rule.output_dim, dtype, columns=True) for g in gradients], 2)
    if rule.kind == "embedding":
        ids = tf.concat([tf.reshape(p.inputs, [examples, -1]) for p in rule.probes], 1)
        inputs = tf.one_hot(tf.cast(ids, tf.int32), rule.input_dim, dtype=dtype)
    else:
        inputs = [_by_example(rule.kernel_inputs(p.inputs), examples, rule.input_dim, dtype) for p in rule.probes]
        inputs = tf.concat(inputs, 1)
    kernel = tf.einsum("etd,cetk->cedk", inputs, outputs)
    pieces = {rule.kernel.path: columns_by_example(kernel, examples)}
    if getattr(rule, "bias", None) is not None:
        pieces[rule.bias.path] = tf.reduce_sum(outputs, 2)
    return pieces


def squared_gradient_sums(
    rule: Any, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType, one_position: bool | None = None
) -> dict[str, tf.Tensor]:
    """Variable path -> the diagonal, flattened like the variable, over one batch: the squares of
    `per_example_gradients` summed, without forming them where a cheaper exact formula exists.

    ``one_position``: whether a Dense layer's only call sees one row per example (its factorised
    formula); ``None`` if unknown, checked while running.
    """
    if rule.kind == "embedding":
        return _embedding(rule, gradients, examples, dtype)
    if one_position:
        return _one_position(rule, gradients[0], dtype)
    if (
        one_position is None
        and rule.kind == "dense"
        and len(rule.probes) == 1
        and rule.probes[0].inputs.shape.rank == 2
    ):
        one_row_each = tf.equal(tf.shape(rule.probes[0].inputs)[0], examples)
        return tf.cond(
            one_row_each,
            lambda: _one_position(rule, gradients[0], dtype),
            lambda: _summed_squares(rule, gradients, examples, dtype),
        )
    return _summed_squares(rule, gradients, examples, dtype)


def _summed_squares(rule: Any, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType) -> dict:
    pieces = per_example_gradients(rule, gradients, examples, dtype)
    return {path: tf.reduce_sum(tf.square(g), [0, 1]) for path, g in pieces.items()}


def _one_position(rule: Any, g: tf.Tensor, dtype: tf.DType) -> dict[str, tf.Tensor]:
    squared = tf.reduce_sum(tf.square(tf.cast(g, dtype)), axis=0)  # (B, d_out)
    inputs = tf.square(tf.cast(rule.probes[0].inputs, dtype))  # (B, d_in)
    pieces = {rule.kernel.path: tf.reshape(tf.matmul(inputs, squared, transpose_a=True), [-1])}
    if rule.bias is not None:
        pieces[rule.bias.path] = tf.reduce_sum(squared, axis=0)
    return pieces


def _embedding(rule: Any, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType) -> dict[str, tf.Tensor]:
    vocabulary, width = rule.input_dim, rule.output_dim
    ids = tf.concat([tf.reshape(tf.cast(p.inputs, tf.int64), [examples, -1]) for p in rule.probes], 1)
    outputs = tf.concat([_by_example(g, examples, width, dtype, columns=True) for g in gradients], 2)
    columns = outputs.shape[0] if outputs.shape[0] is not None else tf.shape(outputs)[0]
    example_of = tf.broadcast_to(tf.range(tf.cast(examples, tf.int64))[:, None], tf.shape(ids))
    keys, segment = tf.unique(tf.reshape(example_of * vocabulary + ids, [-1]))  # (example, token) pairs
    rows = tf.reshape(tf.transpose(outputs, [1, 2, 0, 3]), [-1, columns * width])
    summed = tf.math.unsorted_segment_sum(rows, segment, tf.size(keys))  # per example and token
    squares = tf.reduce_sum(tf.square(tf.reshape(summed, [-1, columns, width])), axis=1)
    table = tf.math.unsorted_segment_sum(squares, keys % vocabulary, vocabulary)
    return {rule.kernel.path: tf.reshape(table, [-1])}


def _by_example(t: tf.Tensor, examples: tf.Tensor, width: int, dtype: tf.DType, columns: bool = False) -> tf.Tensor:
    """``(rows, ..., width)`` as ``(examples, positions, width)``; with ``columns``, ``(C, rows, ...)``
    as ``(C, examples, positions, width)``."""
    t = tf.cast(t, dtype)
    if columns:
        return columns_by_example(t, examples, width)
    return tf.reshape(t, [examples, -1, width])
