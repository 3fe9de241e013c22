"""Turns the user's data into validated mini-batches, streamed so memory does not grow with N.

``data`` is either a tuple ``(x, y)`` of arrays (NumPy or tensors), validated whole before any
work and cut into batches of ``batch_size``, or a batched ``tf.data.Dataset`` of ``(x, y)``,
each batch validated as it arrives (before its curvature is computed). ``x`` may be any input
structure Keras accepts (an array, a list, tuple or dict of arrays, nested; see
`inputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks.inputs import Inputs, as_array, as_input_arrays, conform, describe, n_examples, take
from laplace_tf.networks.validation import check_finite, check_same_length

DEFAULT_BATCH_SIZE = 128
UNBATCHED_X = "The dataset yields single examples (its x has no batch axis); batch it: dataset.batch(64)."
TargetCheck = Callable[[np.ndarray], np.ndarray]


@dataclass
class Batches:
    """Validated ``(x, y)`` batches as NumPy arrays, and how many there are (if known)."""

    iterate: Callable[[], Iterator[tuple[Inputs, np.ndarray]]]
    n_batches: int | None


def as_batches(data: Any, batch_size: int | None, check_targets: TargetCheck) -> Batches:
    """Validates ``data`` and returns its batches.

    Args:
      data: ``(x, y)`` arrays or a batched ``tf.data.Dataset`` yielding ``(x, y)``.
      batch_size: examples per batch for arrays (default 128); a dataset keeps its own batching.
      check_targets: validates a batch of targets and returns them as float ``(B, K)``.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(data, tf.data.Dataset):
        return _dataset_batches(data, check_targets)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _array_batches(*data, batch_size or DEFAULT_BATCH_SIZE, check_targets)
    raise TypeError(
        f"data must be a tuple (x, y) of arrays or a tf.data.Dataset of (x, y) batches, got {type(data).__name__}."
    )


def as_inputs(x: Any, expected: Any = None, what: str = "x") -> Inputs:
    """Inputs for prediction in the structure given, validated (as NumPy) and checked against the
    ``signature`` the Laplace was fitted on (when given).

    Float tensors and variables the user passed are kept as they are (once validated), so
    predictions computed from them are differentiable in them under a ``tf.GradientTape``;
    everything else becomes NumPy.
    """
    arrays = as_input_arrays(x, what)
    if n_examples(arrays) == 0:
        raise ValueError(f"{what} has no examples; pass at least one input to predict on.")
    arrays = arrays if expected is None else conform(arrays, expected, what)
    return with_tensor_leaves(x, arrays)


def with_tensor_leaves(original: Any, arrays: Inputs) -> Inputs:
    """``arrays`` with the user's float tensors (and variables) in place of their NumPy copies."""
    if isinstance(original, (list, tuple)) and len(tf.nest.flatten(original)) != len(tf.nest.flatten(arrays)):
        return arrays  # a plain list of numbers, read as one array
    leaves = [
        given if isinstance(given, (tf.Tensor, tf.Variable)) and given.dtype.is_floating else array
        for given, array in zip(tf.nest.flatten(original), tf.nest.flatten(arrays), strict=True)
    ]
    return tf.nest.pack_sequence_as(arrays, leaves)


def first_inputs(data: Any, n: int = 16) -> Inputs:
    """The first ``n`` examples' inputs, to learn the model's outputs before fitting."""
    if isinstance(data, tf.data.Dataset):
        _check_dataset_spec(data)
        for x, _ in data.take(1):
            return take(as_input_arrays(x, "x"), slice(0, n))
        raise ValueError("The dataset is empty.")
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return take(as_input_arrays(data[0], "x"), slice(0, n))
    raise TypeError(
        f"data must be a tuple (x, y) of arrays or a tf.data.Dataset of (x, y) batches, got {type(data).__name__}."
    )


def check_batched(data: Any, model: Any) -> None:
    """Refuses a dataset of single examples: its inputs have one axis fewer than the model's inputs."""
    if not isinstance(data, tf.data.Dataset):
        return
    try:
        expected = [len(t.shape) for t in tf.nest.flatten(model.inputs)]
    except (AttributeError, ValueError, TypeError):
        return  # a subclassed model does not declare its inputs
    given = [spec.shape.rank for spec in tf.nest.flatten(data.element_spec[0])]
    if len(given) == len(expected) and all(g is not None and g == e - 1 for g, e in zip(given, expected, strict=True)):
        raise ValueError(UNBATCHED_X)


def _array_batches(x: Any, y: Any, batch_size: int, check_targets: TargetCheck) -> Batches:
    x, y = as_input_arrays(x, "x"), as_array(y, "y")
    n = n_examples(x)
    check_same_length(n, len(y))
    if n == 0:
        raise ValueError("The data set is empty.")
    check_finite(y, "y")
    y = check_targets(y)

    def iterate() -> Iterator[tuple[Inputs, np.ndarray]]:
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            yield take(x, part), y[part]

    return Batches(iterate, n_batches=-(-n // batch_size))


def _check_dataset_spec(dataset: tf.data.Dataset) -> None:
    """Refuses, before any element is read, a dataset that does not yield batched ``(x, y)`` pairs."""
    spec = dataset.element_spec
    check_unweighted(dataset)
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(
            f"The dataset must yield (x, y) pairs, e.g. tf.data.Dataset.from_tensor_slices((x, y)).batch(64); "
            f"its elements are {spec}."
        )
    if isinstance(spec[1], tf.TensorSpec) and spec[1].shape.rank == 0:
        raise ValueError("The dataset yields single examples (its y has no batch axis); batch it: dataset.batch(64).")
    check_ends(dataset)


def check_unweighted(dataset: tf.data.Dataset) -> None:
    """Refuses a dataset of ``(x, y, sample_weight)``: its weights would be silently ignored."""
    spec = dataset.element_spec
    if isinstance(spec, tuple) and len(spec) == 3:
        raise ValueError(
            "The dataset yields (x, y, sample_weight) triples; laplace-tf does not weight examples. "
            "Drop the weights (dataset.map(lambda x, y, w: (x, y))) or, for whole-number weights, repeat examples."
        )


def check_ends(dataset: tf.data.Dataset) -> None:
    """Refuses a dataset that repeats forever: a pass over it would never end."""
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The dataset repeats forever (dataset.repeat() without a count), so a pass over it would never "
            "end; pass it without .repeat(), or a finite part of it: dataset.take(number_of_batches)."
        )


def _dataset_batches(dataset: tf.data.Dataset, check_targets: TargetCheck) -> Batches:
    _check_dataset_spec(dataset)

    def iterate() -> Iterator[tuple[Inputs, np.ndarray]]:
        for index, (x, y) in enumerate(dataset):
            x, y = tf.nest.map_structure(lambda t: t.numpy(), x), y.numpy()
            if any(leaf.ndim == 0 for leaf in tf.nest.flatten(x)) or y.ndim == 0:
                raise ValueError(
                    f"Batch {index} of the dataset has x {describe(x)} and y of shape {y.shape}; "
                    "pass a batched dataset (dataset.batch(...)) of matching (x, y)."
                )
            x = as_input_arrays(x, f"x (batch {index} of the dataset)")
            if n_examples(x) != len(y):
                raise ValueError(
                    f"Batch {index} of the dataset has x {describe(x)} and y of shape {y.shape}; "
                    "x and y must have the same number of examples."
                )
            check_finite(y, f"y (batch {index} of the dataset)")
            yield x, check_targets(y)

    cardinality = int(dataset.cardinality())
    return Batches(iterate, n_batches=cardinality if cardinality >= 0 else None)
