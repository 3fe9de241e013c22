"""Progress bars (Keras ``Progbar``) for long loops over batches, switchable off with ``verbose``.

Bars appear only for work of at least ``MIN_BATCHES`` batches, so small calls stay quiet.

Example::

    >>> for part in batch_slices(len(x), 256, verbose=True, unit="batch"):
    ...     predict(x[part])
"""

from __future__ import annotations

import math
import resource
import sys
from collections.abc import Iterator

import keras

MIN_BATCHES = 8


def batch_slices(n: int, batch_size: int, verbose: bool, unit: str = "batch") -> Iterator[slice]:
    """Slices of ``batch_size`` over ``n`` items, with a progress bar when there are many."""
    count = math.ceil(n / batch_size)
    bar = keras.utils.Progbar(count, verbose=1 if verbose and count >= MIN_BATCHES else 0, unit_name=unit)
    for start in range(0, n, batch_size):
        yield slice(start, start + batch_size)
        bar.add(1)


def peak_memory_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024
