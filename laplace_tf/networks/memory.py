"""How much memory a structure's curvature and a batch's Jacobians take, checked before any work.

A structure keeps its curvature (``full``: $P^2$ numbers; ``diag``: $P$; ``kron``:
$\\sum_l d_{in,l}^2 + d_{out,l}^2$ plus diagonal blocks; ``lowrank``: $P k$) and about
twice as much again for its decomposition and the posterior's factors, so `check_curvature`
allows three copies. Per batch, the GGN of ``full`` and ``diag`` (and ``lowrank`` on models that
cannot be vectorised) holds the examples' Jacobians, $B K P$ numbers
(`check_batch_jacobians`). Both raise ``MemoryError`` saying how much is needed and what
to do, before the work starts.

Example:
    ```python
    >>> check_curvature(HessianStructure.FULL, 10**6, 10**12, tf.float32, memory_limit=None)
    Traceback (most recent call last):
    MemoryError: hessian_structure='full' over 1,000,000 parameters needs about 11.2 TiB ...
    ```
"""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.validation import check_memory, default_memory_limit
from laplace_tf.options import HessianStructure

COPIES = 3  # the curvature, its decomposition, and the posterior's factors

_SUGGESTIONS = {
    HessianStructure.FULL: "use hessian_structure='diag' or 'kron', subset_of_weights='last_layer'",
    HessianStructure.KRON: "use hessian_structure='diag', subset_of_weights='last_layer', or fewer or smaller layers",
    HessianStructure.LOWRANK: "use a smaller rank, hessian_structure='diag' or 'kron'",
    HessianStructure.GP: "use a smaller n_subset, hessian_structure='kron' or 'diag'",
    HessianStructure.DIAG: "use subset_of_weights='last_layer' or a subnetwork",
}


def check_curvature(
    structure: HessianStructure, n_params: int, elements: int, dtype: tf.DType, memory_limit: int | None
) -> None:
    """Raises if ``COPIES`` copies of a curvature of ``elements`` numbers exceed the memory limit."""
    needed = COPIES * elements * tf.as_dtype(dtype).size
    what = f"hessian_structure={structure.value!r} over {n_params:,} parameters"
    if structure == HessianStructure.FULL:
        what += f" (three dense {n_params:,} x {n_params:,} {tf.as_dtype(dtype).name} matrices)"
    suggestion = _SUGGESTIONS[structure] + ", or raise memory_limit if the machine has the memory"
    check_memory(needed, what, suggestion, memory_limit)


def check_batch_jacobians(
    batch_size: int, n_outputs: int, n_params: int, dtype: tf.DType, memory_limit: int | None
) -> None:
    """Raises if one batch's per-example Jacobians ``(B, K, P)`` exceed the memory limit."""
    needed = 2 * batch_size * n_outputs * n_params * tf.as_dtype(dtype).size  # J and Lambda J
    check_memory(
        needed,
        f"a batch of {batch_size} examples' Jacobians ({n_outputs} outputs x {n_params:,} parameters)",
        f"pass a smaller batch_size (at most {max(1, batch_size * _limit(memory_limit) // max(needed, 1))}) "
        "or a dataset with smaller batches",
        memory_limit,
    )


def _limit(memory_limit: int | None) -> int:
    return default_memory_limit() if memory_limit is None else int(memory_limit)
