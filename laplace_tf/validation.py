"""Checks of user input that run before any expensive work, with errors that say what to do."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.options import Likelihood as LikelihoodName

DEFAULT_MEMORY_FRACTION = 0.5


def check_finite(array: np.ndarray, what: str) -> None:
    """Raises if a float array holds NaN or inf, saying where the first bad entries are."""
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad_rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        raise ValueError(
            f"{what} contains NaN or inf (first bad rows: {bad_rows[:5].tolist()}); "
            "clean or impute the data before fitting."
        )


def check_same_length(x: np.ndarray, y: np.ndarray) -> None:
    """Raises if inputs and targets disagree on the number of examples."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}; they must have the same length.")


def check_weights_finite(names: Sequence[str], values: Sequence[tf.Tensor]) -> None:
    """Raises if any model weight is NaN or inf, naming the variables."""
    bad = [name for name, value in zip(names, values, strict=True) if not np.all(np.isfinite(np.asarray(value)))]
    if bad:
        raise ValueError(
            f"The model's weights contain NaN or inf in {bad}; the training diverged. "
            "Retrain (e.g. with a lower learning rate) before fitting a Laplace approximation."
        )


def available_memory_bytes() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_memory_limit() -> int:
    """Half the machine's physical memory: the default cap on a dense curvature's footprint."""
    return int(DEFAULT_MEMORY_FRACTION * available_memory_bytes())


def check_dense_memory(n_params: int, dtype: tf.DType, memory_limit: int | None) -> None:
    """Raises if dense ``(P, P)`` matrices (curvature, precision, its Cholesky) would not fit.

    Args:
      n_params: ``P``.
      dtype: the model's float dtype.
      memory_limit: bytes allowed; ``None`` means :func:`default_memory_limit`.
    """
    limit = default_memory_limit() if memory_limit is None else int(memory_limit)
    needed = 3 * n_params**2 * tf.as_dtype(dtype).size
    if needed > limit:
        raise MemoryError(
            f"hessian_structure='full' over {n_params:,} parameters needs about {format_bytes(needed)} "
            f"(three dense {n_params:,} x {n_params:,} {tf.as_dtype(dtype).name} matrices), more than "
            f"the {format_bytes(limit)} allowed (memory_limit). Use hessian_structure='diag' or 'kron', "
            "subset_of_weights='last_layer', or raise memory_limit if the machine has the memory."
        )


def check_memory(needed: int, what: str, suggestion: str, memory_limit: int | None) -> None:
    """Raises a MemoryError if ``needed`` bytes for ``what`` exceed the limit, with a ``suggestion``."""
    limit = default_memory_limit() if memory_limit is None else int(memory_limit)
    if needed > limit:
        raise MemoryError(
            f"{what} needs about {format_bytes(needed)}, more than the {format_bytes(limit)} allowed "
            f"(memory_limit); {suggestion}."
        )


def check_outputs_are_logits(model: Any, likelihood: Any) -> None:
    """Refuses a final softmax/sigmoid: the likelihoods expect logits."""
    layers = getattr(model, "layers", None) or []
    activation = getattr(layers[-1], "activation", None) if layers else None
    squashing = {keras.activations.softmax: "softmax", keras.activations.sigmoid: "sigmoid"}
    if likelihood != LikelihoodName.REGRESSION and activation in squashing:
        raise ValueError(
            f"The model's last layer applies {squashing[activation]}, but laplace-tf needs logits: "
            "rebuild the last layer with activation=None (and train with from_logits=True)."
        )


def format_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
