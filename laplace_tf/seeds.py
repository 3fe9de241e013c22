"""Reproducible randomness: user seeds become TFP/TF stateless seeds."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def fixed_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh one for ``None`` (to share between calls that must draw alike)."""
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**31 - 1))
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}.")
    return int(seed)


def stateless_seed(seed: int | None) -> tf.Tensor:
    """A ``[2]`` int32 stateless seed: fixed for an int, fresh for ``None``.

    The same int gives the same draws on every call, in eager mode and in ``tf.function``.
    """
    return tf.constant([fixed_seed(seed) % (2**31 - 1), 0], dtype=tf.int32)
