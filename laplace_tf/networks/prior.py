r"""The isotropic-or-structured Gaussian prior $\mathcal{N}(\mu_0, \operatorname{diag}(\lambda)^{-1})$.

The prior precision may be given as

* a scalar: the same $\lambda$ for every parameter;
* one value per trainable variable (``layerwise``, as in laplace-torch: a Dense layer's kernel
  and bias are two variables);
* one value per parameter, ``(P,)``.

`expand_prior_precision` turns each into the per-parameter ``(P,)`` vector.

Example:
    ```python
    >>> expand_prior_precision(tf.constant([1.0, 2.0]), sizes=[3, 1], n_params=4).numpy()
    array([1., 1., 1., 2.], dtype=float32)
    ```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf


def as_tensor(value: Any, dtype: tf.DType, name: str = "value") -> tf.Tensor:
    """``value`` as a tensor of ``dtype``; Python floats go straight to ``dtype`` (not via float32).

    Raises:
      TypeError: ``value`` is not numeric (a string, ``None``, an object), naming ``name``.
    """
    if isinstance(value, (tf.Tensor, tf.Variable)):
        numeric = value.dtype.is_floating or value.dtype.is_integer
    else:
        numeric = np.asarray(value).dtype.kind in "biuf" if not isinstance(value, (str, bytes)) else False
    if not numeric:
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}.")
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def validate_prior_precision(value: Any, sizes: Sequence[int], dtype: tf.DType) -> tf.Tensor:
    """Checks a prior precision's shape and positivity and returns it as a tensor of ``dtype``."""
    tensor = as_tensor(value, dtype, "prior_precision")
    n_params, n_variables = int(sum(sizes)), len(sizes)
    if tensor.shape.rank > 1 or (tensor.shape.rank == 1 and tensor.shape[0] not in (n_variables, n_params)):
        raise ValueError(
            f"prior_precision has shape {tensor.shape}; pass a scalar, one value per trainable "
            f"variable ({n_variables},) or one per parameter ({n_params},)."
        )
    if tf.executing_eagerly() and not np.all((np.asarray(tensor) > 0) & np.isfinite(np.asarray(tensor))):
        raise ValueError(f"prior_precision must be positive and finite everywhere, got {np.asarray(tensor)}.")
    return tensor


def validate_prior_mean(value: Any, n_params: int, dtype: tf.DType) -> tf.Tensor:
    """Checks a prior mean (scalar or ``(P,)``) and returns it as a tensor of ``dtype``."""
    tensor = as_tensor(value, dtype, "prior_mean")
    if tensor.shape.rank > 1 or (tensor.shape.rank == 1 and tensor.shape[0] != n_params):
        raise ValueError(f"prior_mean has shape {tensor.shape}; pass a scalar or a vector of shape ({n_params},).")
    if not np.all(np.isfinite(np.asarray(tensor))):
        raise ValueError("prior_mean must be finite.")
    return tensor


def expand_prior_precision(prior_precision: tf.Tensor, sizes: Sequence[int], n_params: int) -> tf.Tensor:
    """The per-parameter ``(P,)`` precision from a scalar, per-variable or per-parameter one."""
    if prior_precision.shape.rank == 0:
        return tf.fill([n_params], prior_precision)
    if prior_precision.shape[0] == n_params:
        return prior_precision
    return tf.repeat(prior_precision, sizes)
