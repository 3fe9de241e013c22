"""Reading the command line's inputs: Keras models (safe mode) and data tables (.npz or .csv).

* ``.npz``: arrays ``x`` (inputs) and, where targets are needed, ``y``; read without pickle. A
  model with several inputs takes arrays ``x_<name>`` instead of ``x``: a dict by input name
  (``x_tokens``, ``x_price``), or a list in order when the names are numbers (``x_0``, ``x_1``).
* ``.csv``: a header row naming the columns; the target column is named by ``--target`` and
  every other column is an input feature.

Example:
    ```python
    >>> x, y = read_data(Path("train.csv"), target="price")
    >>> model = read_model(Path("model.keras"))
    ```
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

DATA_SUFFIXES = (".npz", ".csv")


class InputError(ValueError):
    """A file the command line cannot use, with a message that says what to do."""


def read_model(path: Path):
    """A Keras model from a ``.keras`` file, in safe mode (no code from the file runs)."""
    import keras

    _require_file(path, "model")
    if path.suffix != ".keras":
        raise InputError(f"{path}: the model must be a Keras 3 '.keras' file (model.save('model.keras')).")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, OSError, TypeError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: cannot load the Keras model in safe mode: {error}") from error


def read_data(path: Path, target: str | None, need_targets: bool = True) -> tuple[Any, np.ndarray | None]:
    """``(x, y)`` from a data file; ``y`` is ``None`` when not needed and not present."""
    _require_file(path, "data")
    if path.suffix not in DATA_SUFFIXES:
        raise InputError(f"{path}: data must be .npz (arrays x, y) or .csv (with a header row), not {path.suffix!r}.")
    x, y = _read_npz(path) if path.suffix == ".npz" else _read_csv(path, target, need_targets)
    if need_targets and y is None:
        raise InputError(f"{path}: targets are needed; store them as array 'y' (.npz) or name the column (--target).")
    from laplace_tf.networks.inputs import as_input_arrays, n_examples  # imports TensorFlow: not before it is needed

    try:
        x = as_input_arrays(x, "x")
    except ValueError as error:
        raise InputError(f"{path}: {error}") from error
    if y is not None and len(y) != n_examples(x):
        raise InputError(f"{path}: x has {n_examples(x)} rows but y has {len(y)}; they must match.")
    return x, y


def check_inputs_fit_model(x: Any, model, path: Path, pairs: bool = False) -> None:
    """Raises if the inputs' per-example shape differs from what the model takes (when it says);
    with ``pairs`` (a reward model) the inputs may be pairs of such examples, ``(N, 2, ...)``."""
    if not isinstance(x, np.ndarray):
        return  # several inputs: Keras checks each against its input layer
    expected = getattr(model, "input_shape", None)
    if not isinstance(expected, tuple) or not all(d is None or isinstance(d, int) for d in expected):
        return  # several inputs, or a subclassed model that does not say
    shape = x.shape[1:]
    if pairs and x.ndim == len(expected) + 1:
        if x.shape[1] != 2:
            raise InputError(f"{path}: preference pairs have shape (N, 2, ...), got {x.shape}.")
        shape = x.shape[2:]
    wanted = expected[1:]
    if len(shape) != len(wanted) or any(d is not None and d != n for d, n in zip(wanted, shape, strict=True)):
        raise InputError(f"{path}: the inputs have shape {shape} per example but the model takes {expected[1:]}.")


def _read_npz(path: Path) -> tuple[Any, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        return _inputs_from(arrays, path), arrays.get("y")
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: not a readable .npz file: {error}") from error


def _inputs_from(arrays: dict[str, np.ndarray], path: Path) -> Any:
    """``x``, or the ``x_<name>`` arrays as a dict by name (a list when the names are numbers)."""
    named = {key[2:]: value for key, value in arrays.items() if key.startswith("x_")}
    if "x" in arrays and named:
        raise InputError(f"{path}: has both 'x' and {sorted('x_' + k for k in named)}; keep one kind of inputs.")
    if "x" in arrays:
        return arrays["x"]
    if not named:
        raise InputError(f"{path}: no array 'x' (or 'x_<input name>' per input) in the file (it has {sorted(arrays)}).")
    if all(name.isdigit() for name in named):
        return [named[name] for name in sorted(named, key=int)]
    return named


def _read_csv(path: Path, target: str | None, need_targets: bool) -> tuple[np.ndarray, np.ndarray | None]:
    with path.open() as file:
        header = [name.strip() for name in file.readline().strip().split(",")]
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as error:
        raise InputError(f"{path}: every value after the header must be a number: {error}") from error
    if table.shape[1] != len(header):
        raise InputError(f"{path}: the header names {len(header)} columns but the rows have {table.shape[1]}.")
    if target is None:
        if need_targets:
            raise InputError(f"{path}: name the target column with --target (columns: {header}).")
        return table, None
    if target not in header:
        if need_targets:
            raise InputError(f"{path}: no column {target!r}; the columns are {header}.")
        return table, None
    column = header.index(target)
    return np.delete(table, column, axis=1), table[:, column]


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file.")
