r"""The backward passes that fill the probes: one per column $v_{nc}$, vectorised or tiled.

The probes (`curvature.kfac_layers`, `curvature.norm_layers`) need, for every column $c$, the
gradient of $\sum_n v_{nc}^\top f_n$ at each probed layer's output. Two ways, same numbers:

* ``pfor`` over the columns (`tf.vectorized_map` of a backward pass seeded by column $c$): one
  forward pass, ``C`` backward passes vectorised. Gradients come as ``(C, rows, ...)``, the batch's
  ``B`` examples. Seeding the backward pass with the columns (rather than taking the Jacobian of
  $\sum_n v_{nc}^\top f_n$) leaves ``pfor`` fewer ops to convert, which is what a first call pays.
* tiling, for models ``pfor`` cannot vectorise (`vectorizing`): the batch repeated ``C`` times
  (column-major), one forward and one backward pass with column $c$ seeding copy $c$. Each copy
  is then an example of its own, so gradients come as ``(1, C * rows, ...)`` over ``C * B``
  examples; every sum over examples and columns the probes form is unchanged, and K-FAC's input
  moments count each input ``C`` times together with the positions they are divided by.
  This traces one backward pass instead of ``C`` (or a while loop), which is what a first call pays.
  Where the model declares its outputs' shape (so ``C`` is known before any forward pass) and the
  columns fit one chunk, ``f`` is the tiled pass's first copy: the batch runs through the model once.

One column (a reward model, one regression output, the empirical Fisher) needs neither: the
forward pass that gives ``f`` serves one plain backward pass, whatever the model.

Either way the passes hold ``C`` copies of every probed layer's output gradient (tiled: of the
activations too), so many columns (a classifier of a thousand classes) would need a thousand
times a backward pass's memory. `run_probes` therefore takes the columns in chunks small enough
for ``CHUNK_BYTES`` (`columns_per_chunk`), one after another in a ``tf.while_loop``, and adds up
(or concatenates) what the caller's ``per_chunk`` makes of each chunk's gradients; with one chunk
(the common case) there is no loop. Zero columns pad the last chunk: their gradients are zero.

Example:
    ```python
    >>> f, diagonal = run_probes(params, rules, theta, x, likelihood.hessian_sqrt, per_chunk,
    ...                          likelihood.hessian_sqrt_columns)
    ```
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks.curvature.kfac_layers import recording
from laplace_tf.networks.data import DEFAULT_BATCH_SIZE
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters
from laplace_tf.networks.validation import check_memory
from laplace_tf.options import CurvatureType
from laplace_tf.vectorizing import map_examples


@dataclass
class ProbeRun:
    """The outputs ``f`` ``(B, K)``, per rule and recorded call the gradients ``(C', rows, ...)``,
    the number of examples the probes' rows group into (``B``, or ``C * B`` tiled) and how many
    copies of the batch the rows hold (``C`` tiled, column-major, with ``C' = 1``; else 1)."""

    f: tf.Tensor
    gradients: list[list[tf.Tensor]]
    examples: tf.Tensor
    static_examples: int | None
    copies: int = 1


def probe_columns(likelihood: Likelihood, curvature_type: CurvatureType, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The ``(B, K, C)`` vectors whose backward passes give the probes' gradients: a square root of
    the output Hessian, or the loss gradient for the empirical Fisher."""
    if curvature_type == CurvatureType.EF:
        return likelihood.loss_gradient(f, y)[:, :, None]
    return likelihood.hessian_sqrt(f)


def probe_column_count(likelihood: Likelihood, curvature_type: CurvatureType, n_outputs: int) -> int:
    """How many columns `probe_columns` gives for ``n_outputs`` outputs."""
    return 1 if curvature_type == CurvatureType.EF else likelihood.hessian_sqrt_columns(n_outputs)


CHUNK_BYTES = 2**30  # about what one chunk of columns' backward passes may hold

_expected_batch: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("expected_batch", default=None)


@contextlib.contextmanager
def expected_batch(size: int, free_extent: int = 0) -> Iterator[None]:
    """While tracing inside, chunks of columns are sized for batches of ``size`` examples (a traced
    batch axis is unknown) and, on axes a traced input leaves free (sequences of any length), for a
    size of ``free_extent`` (the longest the compiled function is traced for)."""
    token = _expected_batch.set((size, free_extent))
    try:
        yield
    finally:
        _expected_batch.reset(token)


def run_probes(
    params: ModelParameters,
    rules: list,
    theta: tf.Tensor,
    x: Any,
    columns: Callable[[tf.Tensor], tf.Tensor],
    per_chunk: Callable[[ProbeRun], Any],
    column_count: Callable[[int], int],
    concatenate: bool = False,
    weight_numbers: int = 0,
) -> tuple[tf.Tensor, Any]:
    """The model's outputs ``f`` and ``per_chunk`` of the probes' gradients for ``columns(f)``
    ``(B, K, C)`` (or ``(1, K, C)``, the same for every example), with ``C = column_count(K)`` (a
    tiled pass is sized by it before ``f`` exists): vectorised when ``params.vectorize``, tiled
    otherwise; in chunks of columns when they would not
    fit ``CHUNK_BYTES``, the chunks' results summed or, with ``concatenate``, concatenated along
    their first axis (the columns'; padding dropped). ``weight_numbers``: how many numbers
    ``per_chunk`` forms per example and column (per-example weight gradients)."""
    copies = None if params.vectorize else _declared_columns(params, column_count)
    if copies is not None and copies > 1:  # the tiled pass gives f too: the batch runs through the model once
        tape, f_tiled = _tiled_forward(params, rules, theta, x, copies)
        f = f_tiled[: tf.shape(f_tiled)[0] // copies]
        seeds = tf.stop_gradient(columns(f))
        if seeds.shape[-1] == copies and columns_per_chunk(rules, f, copies, weight_numbers) == copies:
            return f, per_chunk(_tiled_run(tape, rules, f, f_tiled, seeds))
        # chunks needed: the passes below serve (what was traced here is unused, and pruned)
    with tf.GradientTape() as tape:
        with recording(rules, tape):
            f = params.apply(theta, x)
        seeds = tf.stop_gradient(columns(f))
        untiled = params.vectorize or seeds.shape[-1] == 1  # one column needs no pfor and no tiling
    chunk = columns_per_chunk(rules, f, int(seeds.shape[-1]), weight_numbers)
    if chunk < seeds.shape[-1]:

        def chunk_result(chunk_seeds: tf.Tensor) -> Any:
            return per_chunk(_probe_run(params, rules, theta, x, f, chunk_seeds))

        return f, _over_chunks(chunk_result, seeds, chunk, concatenate)
    if untiled:  # the forward pass above serves the backward passes
        flat = backward_passes(tape, f, tf.transpose(seeds, [2, 0, 1]), _watched_outputs(rules))
        return f, per_chunk(ProbeRun(f, _by_rule(rules, flat), tf.shape(f)[0], f.shape[0]))
    return f, per_chunk(_probe_run(params, rules, theta, x, f, seeds))


def columns_per_chunk(rules: list, f: tf.Tensor, columns: int, weight_numbers: int = 0) -> int:
    """How many columns' backward passes fit ``CHUNK_BYTES``: per example and column, three numbers
    for each output entry of a probed layer (recorded by the last forward pass: its gradient, the
    backward pass's own, a tiled activation) and the ``weight_numbers`` the caller forms. Raises a
    ``MemoryError`` if one column would not fit the memory limit."""
    extent = (_expected_batch.get() or (None, 0))[1]
    batch = traced_batch_size(f)
    numbers = weight_numbers
    for output in _watched_outputs(rules):
        rows_per_example = (output.shape[0] or batch) / batch
        numbers += 3 * rows_per_example * int(np.prod([size or extent or 1 for size in output.shape[1:]]))
    per_column = int(batch * numbers * f.dtype.size)
    check_memory(
        per_column,
        f"One backward pass of a batch of {batch} examples through the probed layers",
        "pass a smaller batch_size or a dataset with smaller batches",
        None,
    )
    return max(1, min(columns, CHUNK_BYTES // max(per_column, 1)))


def traced_batch_size(f: tf.Tensor) -> int:
    """The batch size ``f`` ``(B, ...)`` has, or, traced with a free batch axis, the one the function
    is traced for (`expected_batch`), else the default batch size."""
    return f.shape[0] or (_expected_batch.get() or (None, 0))[0] or DEFAULT_BATCH_SIZE


def _probe_run(
    params: ModelParameters, rules: list, theta: tf.Tensor, x: Any, f: tf.Tensor, seeds: tf.Tensor
) -> ProbeRun:
    """The probes' gradients for the columns ``seeds`` ``(B, K, C)`` from a forward pass of their own."""
    if params.vectorize:
        with tf.GradientTape() as tape, recording(rules, tape):
            outputs = params.apply(theta, x)
        flat = backward_passes(tape, outputs, tf.transpose(seeds, [2, 0, 1]), _watched_outputs(rules))
        return ProbeRun(f, _by_rule(rules, flat), tf.shape(f)[0], f.shape[0])
    tape, f_tiled = _tiled_forward(params, rules, theta, x, int(seeds.shape[-1]))
    return _tiled_run(tape, rules, f, f_tiled, seeds)


def _declared_columns(params: ModelParameters, column_count: Callable[[int], int]) -> int | None:
    """The number of columns for the ``(batch, outputs)`` the model declares (known before any
    forward pass), or ``None`` (a subclassed model declares none)."""
    shape = getattr(params.model, "output_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 2 or not isinstance(shape[-1], int):
        return None
    return column_count(shape[-1])


def _tiled_forward(
    params: ModelParameters, rules: list, theta: tf.Tensor, x: Any, copies: int
) -> tuple[tf.GradientTape, tf.Tensor]:
    """The model's outputs on the batch repeated ``copies`` times (copy-major), recorded by the probes."""
    tiled = tf.nest.map_structure(lambda t: tf.tile(t, [copies] + [1] * (len(t.shape) - 1)), x)
    with tf.GradientTape() as tape, recording(rules, tape):
        f_tiled = params.apply(theta, tiled)
    return tape, f_tiled


def _tiled_run(tape: tf.GradientTape, rules: list, f: tf.Tensor, f_tiled: tf.Tensor, seeds: tf.Tensor) -> ProbeRun:
    """One backward pass through the tiled forward pass, copy ``c`` seeded by column ``c`` of ``seeds``
    (``(B, K, C)``, or ``(1, K, C)``: the same for every example)."""
    copies = int(seeds.shape[-1])
    if seeds.shape[0] == 1:  # every example's copy needs its own
        seeds = tf.expand_dims(tf.zeros_like(f), -1) + seeds
    seeds = tf.reshape(tf.transpose(seeds, [2, 0, 1]), tf.shape(f_tiled))
    flat = tape.gradient(
        f_tiled, _watched_outputs(rules), output_gradients=seeds, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    gradients = _by_rule(rules, [tf.expand_dims(g, 0) for g in flat])
    return ProbeRun(f, gradients, tf.shape(f_tiled)[0], f_tiled.shape[0], copies=copies)


def backward_passes(
    tape: tf.GradientTape, f: tf.Tensor, cotangents: tf.Tensor, sources: list[tf.Tensor], vectorize: bool = True
) -> list[tf.Tensor]:
    r"""The gradients ``(C, ...)`` at ``sources`` of $\sum_n u_{cn}^\top f_n$ for each of the ``C``
    cotangents ``(C, B, K)`` (or ``(C, 1, K)``: the same for every example): backward passes seeded
    by them, vectorised over them with ``pfor`` (or looped, `vectorizing.map_examples`), or, for one
    cotangent, a plain backward pass (which traces far fewer ops)."""
    zero = tf.UnconnectedGradients.ZERO

    def backward_pass(cotangent: tf.Tensor) -> list[tf.Tensor]:
        return tape.gradient(f, sources, tf.broadcast_to(cotangent, tf.shape(f)), unconnected_gradients=zero)

    if cotangents.shape[0] == 1:
        return [tf.expand_dims(g, 0) for g in backward_pass(cotangents[0])]  # fewer ops than g[None]
    signature = [tf.TensorSpec(source.shape, source.dtype) for source in sources]  # a gradient is shaped as its source
    return map_examples(backward_pass, cotangents, vectorize, signature)


def _over_chunks(body: Callable[[tf.Tensor], Any], seeds: tf.Tensor, chunk: int, concatenate: bool) -> Any:
    """``body`` of each chunk of ``chunk`` columns of ``seeds`` ``(B, K, C)``, one chunk at a time,
    summed or concatenated."""
    columns = int(seeds.shape[-1])
    count = -(-columns // chunk)
    padded = tf.pad(seeds, [[0, 0], [0, 0], [0, count * chunk - columns]])
    chunks = tf.reshape(padded, [tf.shape(seeds)[0], seeds.shape[1], count, chunk])
    first = body(chunks[:, :, 0])  # outside the loop: it gives the results' structure and shapes
    if concatenate:
        arrays = [tf.TensorArray(t.dtype, size=count, infer_shape=False).write(0, t) for t in tf.nest.flatten(first)]
    else:
        arrays = tf.nest.flatten(first)

    def step(index: tf.Tensor, *carried: Any) -> tuple:
        pieces = tf.nest.flatten(body(tf.gather(chunks, index, axis=2)))
        if concatenate:
            return (index + 1, *[a.write(index, p) for a, p in zip(carried, pieces, strict=True)])
        return (index + 1, *[a + p for a, p in zip(carried, pieces, strict=True)])

    results = tf.while_loop(lambda index, *_: index < count, step, (tf.constant(1), *arrays), parallel_iterations=1)[1:]
    if concatenate:
        results = [a.concat()[:columns] for a in results]
    return tf.nest.pack_sequence_as(first, list(results))


def _watched_outputs(rules: list) -> list[tf.Tensor]:
    return [output for rule in rules for output in rule.outputs]


def _by_rule(rules: list, flat: list[tf.Tensor]) -> list[list[tf.Tensor]]:
    ends = np.cumsum([len(rule.probes) for rule in rules])
    return [flat[end - len(rule.probes) : end] for rule, end in zip(rules, ends, strict=True)]
