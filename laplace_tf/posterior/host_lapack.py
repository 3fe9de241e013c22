r"""Dense factorisations of a fitted curvature or posterior, by LAPACK on the host.

A fit's curvature and its posterior are factored once and then reused: the Cholesky factor $L$
of $P = L L^\top$, the covariance factor $S = L^{-\top}$ (with $S S^\top = P^{-1}$), and the
eigendecomposition of a dense curvature or of each Kronecker factor. On a CPU, TensorFlow's
kernels for these are several times slower than LAPACK's: its triangular solve against the
identity takes $P^3$ multiply-adds where ``trtri`` takes $P^3 / 3$, and its symmetric
eigensolver is not divide-and-conquer. For $P = 3{,}760$ in float32, TensorFlow takes 0.69 s for
$L$ and $S$ and 11.5 s for the eigendecomposition; LAPACK 0.19 s and 2.0 s.

What these return are constants: they carry no gradients. They serve only values nothing
differentiates (a fitted Laplace's, computed under ``tf.init_scope``, which pauses gradient
tapes), computed eagerly on a CPU in float32 or float64 (`on_host`); elsewhere (in graphs, on
accelerators, for other dtypes) the dispatching functions take TensorFlow's kernels.

Example:
    ```python
    >>> precision = tf.constant([[4.0, 2.0], [2.0, 3.0]], tf.float64)
    >>> cholesky(precision).numpy()
    array([[2.        , 0.        ],
           [1.        , 1.41421356]])
    ```
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import tensorflow as tf
from scipy.linalg import lapack

_HOST_DTYPES = (tf.float32, tf.float64)


def on_host(tensor: tf.Tensor) -> bool:
    """Whether ``tensor`` holds values on the CPU in a dtype LAPACK takes, so that it can be
    factored here: eager (not a graph's), float32 or float64, placed on a CPU device."""
    return (
        isinstance(tensor, tf.Tensor)
        and hasattr(tensor, "numpy")
        and tensor.dtype in _HOST_DTYPES
        and "GPU" not in tensor.device
        and "TPU" not in tensor.device
    )


def cholesky(precision: tf.Tensor) -> tf.Tensor | None:
    """The lower Cholesky factor $L$ of ``precision`` ($P = L L^\\top$), or ``None`` when
    ``precision`` is not positive definite (LAPACK's ``potrf`` stops at a non-positive pivot)."""
    matrix = _column_major_copy(precision)
    (potrf,) = lapack.get_lapack_funcs(("potrf",), (matrix,))
    factor, info = potrf(matrix, lower=True, clean=True, overwrite_a=True)
    return None if info != 0 else tf.constant(factor)


def inverse_transpose(lower: tf.Tensor) -> tf.Tensor:
    """$L^{-\\top}$ of a lower-triangular, invertible ``lower``, by LAPACK's ``trtri``
    ($P^3/3$ multiply-adds) on $L^\\top$, which is the row-major copy of $L$ read column-major."""
    upper = lower.numpy().T
    (trtri,) = lapack.get_lapack_funcs(("trtri",), (upper,))
    inverse, info = trtri(upper, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"The Cholesky factor is singular (LAPACK trtri info={info}).")
    return tf.constant(inverse)


def eigh(matrix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric ``matrix``: LAPACK's
    divide-and-conquer ``syevd`` on the host, else ``tf.linalg.eigh``."""
    if not on_host(matrix):
        return tf.linalg.eigh(matrix)
    values, vectors = scipy.linalg.eigh(_column_major_copy(matrix), driver="evd", overwrite_a=True, check_finite=False)
    return tf.constant(values), tf.constant(vectors)


def eigvalsh(matrix: tf.Tensor) -> tf.Tensor:
    """Eigenvalues (ascending) of a symmetric ``matrix``: LAPACK's ``syevd`` on the host, else
    ``tf.linalg.eigvalsh``."""
    if not on_host(matrix):
        return tf.linalg.eigvalsh(matrix)
    values = scipy.linalg.eigh(
        _column_major_copy(matrix), eigvals_only=True, driver="evd", overwrite_a=True, check_finite=False
    )
    return tf.constant(values)


def _column_major_copy(symmetric: tf.Tensor) -> np.ndarray:
    """A copy of a symmetric matrix that LAPACK may overwrite without copying it again:
    ``Tensor.numpy`` copies, and the row-major buffer of a symmetric matrix is also column-major."""
    return symmetric.numpy().T
