"""Predictions over a ``tf.data.Dataset``: one pass, batch by batch, the results joined.

Test data often comes as a dataset (``keras.utils.image_dataset_from_directory``, a ``tf.data``
pipeline), so the predictive methods take one wherever they take arrays. Each element's inputs
are read the way Keras reads them (``keras.utils.unpack_x_y_sample_weight``: an element
``(x, y)`` or ``(x, y, sample_weight)`` gives ``x``; anything else is ``x``), predicted on like
arrays, and the batches' results are concatenated along the examples' axis. Memory holds the
predictions, never the dataset's inputs. There is one pass, so a dataset that reshuffles on every
pass still gives each prediction beside its own target (`evaluate`). Draws share one seed across
the batches: the ``"nn"`` predictive uses the same parameter draws for every batch, as it does
for arrays.

Example:
    ```python
    >>> test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(64)
    >>> la.predict(test)          # the same as la.predict(x_test), batch by batch
    >>> la.evaluate(test)         # the targets come from the dataset
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.networks.data import check_ends
from laplace_tf.progress import QUIET_SECONDS, Progress


def is_dataset(x: Any) -> bool:
    """Whether ``x`` is a ``tf.data.Dataset`` (predicted on batch by batch) rather than arrays."""
    return isinstance(x, tf.data.Dataset)


def input_rank(dataset: tf.data.Dataset) -> int | None:
    """The rank of the first input leaf of the dataset's elements (batch axis included)."""
    inputs, _, _ = keras.utils.unpack_x_y_sample_weight(dataset.element_spec)
    return tf.nest.flatten(inputs)[0].shape.rank


def batches_of(dataset: tf.data.Dataset, verbose: bool = False, label: str = "predict") -> Iterator[tuple[Any, Any]]:
    """Each element's ``(x, y)`` as NumPy (``y`` is ``None`` where the element has none), with progress."""
    check_ends(dataset)
    total = int(dataset.cardinality())
    total = total if total >= 0 else None
    progress = Progress(total, verbose, label=label, delay=QUIET_SECONDS)
    for element in dataset:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
        yield tf.nest.map_structure(np.asarray, x), None if y is None else np.asarray(y)
        progress.add(1)
    progress.close()


def over_batches(dataset: tf.data.Dataset, predict: Callable[[Any], Any], axis: int = 0, verbose: bool = False) -> Any:
    """``predict`` of each batch's inputs, concatenated along ``axis`` (every output's examples axis)."""
    results = [predict(x) for x, _ in batches_of(dataset, verbose)]
    if not results:
        raise ValueError("The dataset is empty; pass at least one batch to predict on.")
    return joined(results, axis)


def joined(results: list[Any], axis: int = 0, concatenate: Callable = tf.concat) -> Any:
    """The batches' results, each a structure of tensors (or, with ``np.concatenate``, arrays),
    concatenated leaf by leaf along ``axis``."""
    return tf.nest.map_structure(lambda *parts: concatenate(parts, axis), *results)
