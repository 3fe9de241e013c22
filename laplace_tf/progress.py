"""Progress on long loops: a live bar in a terminal, one plain line in a log, nothing when silenced.

In a terminal (standard output is a TTY, or a notebook) `Progress` draws Keras's
``Progbar``. Written to a file or a CI log, redraws would come out as escape sequences, one per
step; there it prints nothing while the work runs and one plain line when it ends
(``fit: 12 batches in 3.4 s``). ``verbose=False`` silences both.

Example:
    ```python
    >>> for part in batch_slices(len(x), 256, verbose=True, label="predict"):
    ...     predict(x[part])
    ```
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator

import keras

MIN_BATCHES = 8


class Progress:
    """Counts finished steps of a task and shows them, as suits where the output goes.

    Args:
      total: the number of steps, if known.
      verbose: show anything at all.
      unit: what a step is (``"batch"``, ``"prior"``, ...), for the display.
      label: what the task is, for the closing line in logs.
    """

    def __init__(self, total: int | None, verbose: bool, unit: str = "batch", label: str = "progress"):
        self.unit, self.label, self.count = unit, label, 0
        self.verbose = verbose
        self._started = time.perf_counter()
        self._bar = keras.utils.Progbar(total, unit_name=unit) if verbose and _interactive() else None

    def add(self, steps: int = 1, values: list[tuple[str, float]] | None = None) -> None:
        """``steps`` more steps are done; ``values`` are shown beside the bar in a terminal."""
        self.count += steps
        if self._bar is not None:
            self._bar.add(steps, values=values)

    def close(self) -> None:
        """Ends the task: in a log, its one line."""
        if self.verbose and self._bar is None:
            plural = "" if self.count == 1 else ("es" if self.unit.endswith(("tch", "sh", "s", "x")) else "s")
            elapsed = time.perf_counter() - self._started
            print(f"{self.label}: {self.count} {self.unit}{plural} in {elapsed:.1f} s", flush=True)


def batch_slices(
    n: int, batch_size: int, verbose: bool, unit: str = "batch", label: str = "progress"
) -> Iterator[slice]:
    """Slices of ``batch_size`` over ``n`` items, with progress shown when there are many."""
    count = math.ceil(n / batch_size)
    progress = Progress(count, verbose and count >= MIN_BATCHES, unit, label)
    for start in range(0, n, batch_size):
        yield slice(start, start + batch_size)
        progress.add(1)
    progress.close()


def peak_memory_bytes() -> int:
    """The process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _interactive() -> bool:
    """Whether standard output redraws in place: a terminal or a notebook."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules
