"""Plots of an `UncertaintyReport`, drawn with matplotlib's object API.

Classification: a reliability diagram (accuracy against confidence per bin, the diagonal being
perfect calibration) and the number of examples per bin. Regression: the coverage curve (the
fraction of targets inside each central interval against its level) and the intervals' mean
width. No pyplot: the figure never touches the user's interactive backend.

Example:
    ```python
    >>> figure = plot_report(report, "reliability.png")
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from laplace_tf.files import write_atomically

MATPLOTLIB_MISSING = "Plotting needs matplotlib, an optional extra: pip install 'laplace-tf[plot]' (or matplotlib)."


def plot_report(report: Any, path: str | None = None, dpi: int = 120) -> Any:
    """Draws ``report`` as a two-panel figure, saved as PNG at ``path`` if given."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(MATPLOTLIB_MISSING) from error
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    if report.task in ("classification", "multilabel", "preference pairs"):
        _reliability(report, left, right)
    else:
        _coverage(report, left, right)
    figure.suptitle(f"{report.task.capitalize()}: {', '.join(report.columns)} on {report.n_examples} examples")
    if path is not None:
        write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=dpi))
    return figure


def _reliability(report: Any, diagram: Any, histogram: Any) -> None:
    diagram.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    n_columns = len(report.columns)
    for index, column in enumerate(report.columns):
        curve = report.curves[column]
        confidence, accuracy = np.asarray(curve["confidence"], float), np.asarray(curve["accuracy"], float)
        filled = np.isfinite(confidence)
        ece = report.metrics[column]["ece"]
        diagram.plot(confidence[filled], accuracy[filled], marker="o", label=f"{column} (ECE {ece:.3f})")
        n_bins = len(curve["count"])
        centres = (np.arange(n_bins) + 0.5) / n_bins
        width = 1.0 / n_bins / n_columns
        histogram.bar(centres + (index - (n_columns - 1) / 2) * width, curve["count"], width=width, label=column)
    diagram.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title="Reliability diagram")
    diagram.legend(loc="upper left")
    histogram.set(xlim=(0, 1), xlabel="confidence", ylabel="examples", title="Examples per confidence bin")
    histogram.legend(loc="upper left")


def _coverage(report: Any, curve_axes: Any, width_axes: Any) -> None:
    curve_axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfect calibration")
    for column in report.columns:
        curve = report.curves[column]
        error = report.metrics[column]["calibration_error"]
        curve_axes.plot(curve["level"], curve["coverage"], marker="o", label=f"{column} (error {error:.3f})")
        width_axes.plot(curve["level"], curve["width"], marker="o", label=column)
    curve_axes.set(
        xlim=(0, 1), ylim=(0, 1), xlabel="interval level", ylabel="observed coverage", title="Coverage of intervals"
    )
    curve_axes.legend(loc="upper left")
    width_axes.set(xlabel="interval level", ylabel="mean width", title="Sharpness (interval width)")
    width_axes.legend(loc="upper left")
