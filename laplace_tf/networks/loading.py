"""Loading a fitted Laplace from a file written by [`Laplace.save`][laplace_tf.Laplace.save]: the
file's checked state (`io`) on a new [`Laplace`][laplace_tf.Laplace] of the same model.

Example:
    ```python
    >>> la.save("posterior.npz")
    >>> la2 = lt.load("posterior.npz", model)      # identical predictions
    ```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from laplace_tf.networks import io
from laplace_tf.networks.laplace import Laplace


def load(path: str | Path, model: Any) -> Laplace:
    """A fitted [`Laplace`][laplace_tf.Laplace] of ``model`` from a file written by
    [`Laplace.save`][laplace_tf.Laplace.save].

    Args:
      path: the saved file.
      model: the same trained Keras model (same architecture and weights) the Laplace was fitted to.

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: not a laplace-tf file, a newer format, a truncated or corrupted file, or a
        model that does not match (the message says what differs).
      TypeError: ``model`` is not a Keras model.
    """
    metadata, arrays = io.read(path, model)
    with io.malformed_file(path):
        la = Laplace(model, **io.laplace_arguments(metadata, arrays, model))
        io.check_selection(metadata, la)
        la._restore_fit(**io.fit_state(metadata, arrays))
    return la
