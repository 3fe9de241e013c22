"""Progress on long loops: a live bar in a terminal, one plain line in a log, nothing when silenced.

In a terminal (standard output is a TTY, or a notebook) `Progress` draws Keras's
``Progbar``. Written to a file or a CI log, redraws would come out as escape sequences, one per
step; there it prints nothing while the work runs and one plain line when it ends
(``fit: 12 batches in 3.4 s``). ``verbose=False`` silences both.

A task may ask to stay quiet while it is short (``delay``): predictions, which scripts make
many of and print beside, show nothing unless they run longer than `QUIET_SECONDS`; the bar
appears once they have, the closing line only if they did.

Example:
    ```python
    >>> for part in batch_slices(len(x), 256, verbose=True, label="predict"):
    ...     predict(x[part])      # silent unless the loop runs longer than QUIET_SECONDS
    ```
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Iterator

import keras

QUIET_SECONDS = 2.0  # how long a prediction runs before it shows progress


class Progress:
    """Counts finished steps of a task and shows them, as suits where the output goes.

    Args:
      total: the number of steps, if known.
      verbose: show anything at all.
      unit: what a step is (``"batch"``, ``"prior"``, ...), for the display.
      label: what the task is, for the closing line in logs.
      delay: seconds the task runs before anything is shown (0: from the start).
    """

    def __init__(
        self, total: int | None, verbose: bool, unit: str = "batch", label: str = "progress", delay: float = 0.0
    ):
        self.total, self.unit, self.label, self.count = total, unit, label, 0
        self.verbose, self.delay = verbose, delay
        self._started = time.perf_counter()
        self._terminal = verbose and _interactive()
        self._bar = self._new_bar() if self._terminal and delay <= 0 else None  # its clock starts with the task

    def add(self, steps: int = 1, values: list[tuple[str, float]] | None = None) -> None:
        """``steps`` more steps are done; ``values`` are shown beside the bar in a terminal."""
        self.count += steps
        if self._bar is not None:
            self._bar.add(steps, values=values)
        elif self._terminal and self._elapsed() >= self.delay:  # the bar starts with the steps done so far
            self._bar = self._new_bar()
            self._bar.update(self.count, values=values)

    def close(self) -> None:
        """Ends the task: in a log, its one line (if the task ran longer than ``delay``)."""
        if self.verbose and not self._terminal and self._elapsed() >= self.delay:
            plural = "" if self.count == 1 else ("es" if self.unit.endswith(("tch", "sh", "s", "x")) else "s")
            print(f"{self.label}: {self.count} {self.unit}{plural} in {self._elapsed():.1f} s", flush=True)

    def _new_bar(self) -> keras.utils.Progbar:
        return keras.utils.Progbar(self.total, unit_name=self.unit)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started


def batch_slices(
    n: int, batch_size: int, verbose: bool, unit: str = "batch", label: str = "progress"
) -> Iterator[slice]:
    """Slices of ``batch_size`` over ``n`` items, with progress shown if the loop runs longer than
    `QUIET_SECONDS`."""
    progress = Progress(math.ceil(n / batch_size), verbose, unit, label, delay=QUIET_SECONDS)
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
