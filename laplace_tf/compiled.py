"""Compiled functions cached per Keras model, so new Laplace objects on one model skip tracing.

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

import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import keras

T = TypeVar("T")
_per_model: weakref.WeakKeyDictionary[keras.Model, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def cached(model: keras.Model, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``'s result for ``(model, key)``, built once while the model lives."""
    entries = _per_model.setdefault(model, {})
    if key not in entries:
        entries[key] = build()
    return entries[key]
