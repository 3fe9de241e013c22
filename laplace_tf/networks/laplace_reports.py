"""The reporting half of [`Laplace`][laplace_tf.Laplace]: uncertainty reports, ArviZ data, PSIS diagnostics.

Each method is a function of `laplace_tf.reports` with the Laplace as its first argument, looked up
when first used, so that loading the networks loads nothing from the reports.

Example:
    ```python
    >>> print(la.evaluate(x_test, y_test))
    >>> data = la.to_inference_data(x_train, y_train, num_draws=400, seed=0)
    >>> print(la.diagnose((x_train, y_train), seed=0))
    ```
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any


class ReportFunction:
    """A method that is the function of the same name in ``laplace_tf.reports.<module>``, bound to
    the instance (``help(la.evaluate)`` shows that function's signature and docstring)."""

    def __init__(self, module: str) -> None:
        self.module = f"laplace_tf.reports.{module}"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Callable:
        function = getattr(importlib.import_module(self.module), self.name)
        return function if instance is None else types.MethodType(function, instance)


class LaplaceReports:
    """Reports of a fitted Laplace; [`Laplace`][laplace_tf.Laplace] provides the posterior and predictive."""

    evaluate = ReportFunction("evaluation")
    to_inference_data = ReportFunction("inference_data")
    diagnose = ReportFunction("diagnostics")
