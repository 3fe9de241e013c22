"""The reporting half of [`Laplace`][laplace_tf.Laplace]: uncertainty reports, ArviZ data, PSIS diagnostics.

Example:
    ```python
    >>> print(la.evaluate(x_test, y_test))
    >>> data = la.to_inference_data(x_train, y_train, num_draws=400, seed=0)
    >>> print(la.diagnose((x_train, y_train), seed=0))
    ```
"""

from __future__ import annotations

from laplace_tf.reports import diagnostics, evaluation, inference_data


class LaplaceReports:
    """Reports of a fitted Laplace; [`Laplace`][laplace_tf.Laplace] provides the posterior and predictive.

    Each method is the module function of the same name, with the Laplace as its first argument.
    """

    evaluate = evaluation.evaluate
    to_inference_data = inference_data.to_inference_data
    diagnose = diagnostics.diagnose
