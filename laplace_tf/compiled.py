"""Compiled functions: cached per Keras model, so new Laplace objects on one model skip tracing,
and each counting its own traces (`separate_tf_function`).

The cache is keyed weakly by the model: when the model is garbage-collected, its entries go too.
Cached functions must not hold the model strongly (``ModelParameters`` keeps a weak reference).

Example:
    ```python
    >>> first = cached(model, ("kron", "ggn"), build_estimator)
    >>> cached(model, ("kron", "ggn"), build_estimator) is first
    True
    ```
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import keras
import tensorflow as tf

T = TypeVar("T")
_per_model: weakref.WeakKeyDictionary[keras.Model, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def cached(model: keras.Model, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``'s result for ``(model, key)``, built once while the model lives."""
    entries = _per_model.setdefault(model, {})
    if key not in entries:
        entries[key] = build()
    return entries[key]


def separate_tf_function(fn: Callable, **options: Any) -> Callable:
    """``tf.function(fn, autograph=False, **options)`` whose traces TensorFlow counts on their own.

    TensorFlow warns of "frequent retracing" when the functions sharing one Python code object
    were traced five times in their last ten calls. The package compiles the same methods once per
    model and configuration, so a notebook fitting a few models or structures on a batch or two
    each would read as retracing; a ``functools.partial`` (which has no code object) makes the
    count this function's alone, so real retracing of it still warns.
    """
    return tf.function(functools.partial(fn), autograph=False, **options)
