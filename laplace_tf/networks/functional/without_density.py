"""The part of a posterior that has no density over all the weights: those methods raise, saying why.

Example:
    ```python
    >>> class Projected(WithoutDensity):
    ...     reason = "this posterior lives on a subspace"
    >>> Projected().log_prob(theta)
    Traceback (most recent call last):
    ValueError: this posterior lives on a subspace
    ```
"""

from __future__ import annotations

from typing import Any


class WithoutDensity:
    """``log_prob``, ``distribution``, ``precision_operator`` and ``log_det_precision`` raise ``reason``."""

    reason: str

    def log_prob(self, theta: Any) -> Any:
        raise ValueError(self.reason)

    def distribution(self) -> Any:
        raise ValueError(self.reason)

    def precision_operator(self) -> Any:
        raise ValueError(self.reason)

    @property
    def log_det_precision(self) -> Any:
        raise ValueError(self.reason)
