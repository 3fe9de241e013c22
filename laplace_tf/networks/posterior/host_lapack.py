r"""Dense factorisations of a fitted curvature or posterior, by LAPACK on the host.

A fit's curvature and its posterior are factored once and then reused: the Cholesky factor $L$
of $P = L L^\top$, the covariance factor $S = L^{-\top}$ (with $S S^\top = P^{-1}$), and the
eigendecomposition of a dense curvature or of each Kronecker factor. On a CPU, TensorFlow's
kernels for these are several times slower than LAPACK's: its triangular solve against the
identity takes $P^3$ multiply-adds where ``trtri`` takes $P^3 / 3$, and its symmetric
eigensolver is not divide-and-conquer. For $P = 3{,}760$ in float32, TensorFlow takes 0.69 s for
$L$ and $S$ and 11.5 s for the eigendecomposition; LAPACK 0.19 s and 2.0 s. The precision is
formed in the buffer LAPACK factors, and $L$ and $S$ reach TensorFlow without a copy
(`_shared_tensor`): in a fresh process, each new ``(P, P)`` buffer costs its pages' first touch.
Jacobians are whitened, $J L^{-\top}$, by BLAS's triangular solve in place (`solve_rows`), without
$S$: a 540-point GLM predictive of the 64-50-10 MLP ($P = 3{,}760$) takes 0.76 s in float64 where
TensorFlow's product $J S$ took 1.42 s, and about as long as $J S$ in float32 (0.37 s against
0.33 s); TensorFlow's own triangular solve takes about twice as long as either.

What these return are constants: they carry no gradients. They serve only values nothing
differentiates (a fitted Laplace's, computed under ``tf.init_scope``, which pauses gradient
tapes; `FullPosterior` gives `solve_rows` the gradient in its rows that predictives differentiated
in their inputs need), computed eagerly on a CPU in float32 or float64 (`on_host`); elsewhere (in graphs, on
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
from numpy.typing import DTypeLike
from scipy.linalg import blas, lapack

_HOST_DTYPES = (tf.float32, tf.float64)
_TENSOR_ALIGNMENT = 64  # bytes: Eigen's largest alignment, which a tensor's buffer must have


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


def cholesky(matrix: tf.Tensor, scale: tf.Tensor | None = None, diagonal: tf.Tensor | None = None) -> tf.Tensor | None:
    """The lower Cholesky factor $L$ of the precision $P = s M + \\operatorname{diag}(d)$ (``scale``
    $s$ and ``diagonal`` $d$ optional; ``matrix`` $M$ symmetric), or ``None`` when $P$ is not
    positive definite (LAPACK's ``potrf`` stops at a non-positive pivot). $P$ is formed in the
    buffer that ``potrf`` then overwrites with $L$, which the returned tensor shares."""
    precision = _aligned_empty(matrix.shape, matrix.dtype.as_numpy_dtype)
    if scale is None:
        np.copyto(precision, np.asarray(matrix))
    else:
        np.multiply(np.asarray(matrix), np.asarray(scale), out=precision)
    if diagonal is not None:
        precision.reshape(-1)[:: precision.shape[0] + 1] += np.asarray(diagonal)
    # read column-major, the row-major buffer is P itself (symmetric); its upper factor U = L^T,
    # written column-major, is L row-major
    (potrf,) = lapack.get_lapack_funcs(("potrf",), (precision,))
    upper, info = potrf(precision.T, lower=False, clean=True, overwrite_a=True)
    return None if info != 0 else _shared_tensor(upper.T)


def inverse_transpose(lower: tf.Tensor) -> tf.Tensor:
    """$L^{-\\top}$ of a lower-triangular, invertible ``lower``, by LAPACK's ``trtri``
    ($P^3/3$ multiply-adds): $L^\\top$ written row-major is $L$ read column-major, whose inverse
    $L^{-1}$ written column-major in place is $L^{-\\top}$ row-major."""
    buffer = _aligned_empty(lower.shape, lower.dtype.as_numpy_dtype)
    np.copyto(buffer, np.asarray(lower).T)
    (trtri,) = lapack.get_lapack_funcs(("trtri",), (buffer,))
    inverse, info = trtri(buffer.T, lower=True, overwrite_c=True)
    if info != 0:
        raise ValueError(f"The Cholesky factor is singular (LAPACK trtri info={info}).")
    return _shared_tensor(inverse.T)


def solve_rows(lower: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """$R L^{-\\top}$ for ``rows`` $R$ ``(n, P)`` and a lower-triangular, invertible ``lower`` $L$,
    by BLAS's ``trsm`` in $n P^2$ multiply-adds, as many as the product $R S$ with $S = L^{-\\top}$,
    which it spares forming ($P^3 / 3$ more, and a ``(P, P)`` buffer). $R$ written row-major is
    $R^\\top$ read column-major, which ``trsm`` overwrites in place with $L^{-1} R^\\top$: $R L^{-\\top}$
    row-major. $L$ row-major is $L^\\top$ read column-major, so ``trsm`` reads it transposed."""
    buffer = _aligned_empty(rows.shape, rows.dtype.as_numpy_dtype)
    np.copyto(buffer, np.asarray(rows))
    (trsm,) = blas.get_blas_funcs(("trsm",), (buffer,))
    solved = trsm(1.0, np.asarray(lower).T, buffer.T, lower=False, trans_a=True, overwrite_b=True)
    return _shared_tensor(solved.T)


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


def _aligned_empty(shape: tuple, dtype: DTypeLike) -> np.ndarray:
    """An uninitialised row-major array whose first byte is aligned as TensorFlow requires of a
    buffer it shares (`_shared_tensor`); NumPy aligns large arrays to 16 bytes only."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + _TENSOR_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _TENSOR_ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


def _shared_tensor(array: np.ndarray) -> tf.Tensor:
    """A tensor of ``array``'s values that shares its memory (through DLPack) where TensorFlow can
    (a row-major buffer aligned to `_TENSOR_ALIGNMENT` bytes), else a copy. In a fresh process the
    first copy of a large matrix can take as long as its Cholesky factorisation (new pages)."""
    if array.flags.c_contiguous and array.ctypes.data % _TENSOR_ALIGNMENT == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.constant(array)


def _column_major_copy(symmetric: tf.Tensor) -> np.ndarray:
    """A copy of a symmetric matrix that LAPACK may overwrite without copying it again:
    ``Tensor.numpy`` copies, and the row-major buffer of a symmetric matrix is also column-major."""
    return symmetric.numpy().T
