"""Saving and loading a fitted Laplace: NumPy arrays plus JSON metadata in one ``.npz``, no pickle.

Format ``laplace-tf`` version 2, a ZIP archive written by ``numpy.savez_compressed``:

* ``metadata``: a JSON document (as a 0-d unicode array) with the format name and version, the
  package version, the options (likelihood, structure, curvature, subset, temperature, ...), the
  fit (``n_data``, ``n_outputs``), the model's trainable variables in order (shape, dtype, how
  many entries are selected; the path for messages only), the model's fingerprint (SHA-256 of
  all its variables' shapes, dtypes and values, in order), a description of the curvature sums'
  structure, and each array's SHA-256;
* arrays ``mean``, ``prior_precision``, ``prior_mean``, ``sigma_noise``, ``loss``, ``sums/...``
  (the curvature sums from which the curvature is rebuilt exactly, so ``fit(override=False)``
  can continue after loading) and, for a subset given by patterns or masks, ``subset/i``: the
  selected entries of the ``i``-th trainable variable.

The model is matched by structure, as Keras's own weight loading does: variables in order, with
their shapes, dtypes and values. Names are not compared, so a model reloaded from ``.keras`` or
rebuilt in another process (where Keras names its layers ``dense_2`` rather than ``dense``) loads.
Version 1 files (which matched by variable path, before laplace-tf 0.1 was released) are refused
with a message to fit and save again.

Writing goes to a temporary file renamed into place, so a crash never leaves half a file.
Loading checks the format, every checksum, and that the model matches, and says exactly what differs.

Example:
    ```python
    >>> la.save("posterior.npz")
    >>> la2 = lt.load("posterior.npz", model)      # identical predictions
    ```
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.files import write_atomically
from laplace_tf.networks.curvature.lowrank import LowRankCurvature
from laplace_tf.networks.functional.gp import NystromCurvature
from laplace_tf.networks.inputs import signature_from_json, signature_to_json

FORMAT = "laplace-tf"
FORMAT_VERSION = 2
_DATACLASSES = {cls.__name__: cls for cls in (LowRankCurvature, NystromCurvature)}
_REQUIRED_METADATA = ("format", "format_version", "checksums")


def save(la: Any, path: str | Path) -> Path:
    """Writes a fitted Laplace to ``path`` (conventionally ``.npz``), atomically."""
    from laplace_tf import __version__

    la._require_fitted()
    arrays = {
        "mean": la.mean.numpy(),
        "prior_precision": la.prior_precision.numpy(),
        "prior_mean": la.prior_mean.numpy(),
        "sigma_noise": np.asarray(la.sigma_noise.numpy()),
        "loss": np.asarray(la._loss.numpy()),
    }
    sums_spec = _encode(la._sums, "sums", arrays)
    subset = la.subset_of_weights if isinstance(la.subset_of_weights, str) else _selection(la)
    subset_spec = _encode(subset, "subset", arrays)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "laplace_tf_version": __version__,
        "likelihood": la.likelihood.name.value,
        "hessian_structure": la.hessian_structure.value,
        "curvature": la.curvature_type.value,
        "subset_of_weights": subset_spec,
        "options": la.options,
        "n_data": la.n_data,
        "n_outputs": la.n_outputs,
        "dtype": la.dtype.name,
        "variables": _variables(la),
        "model_fingerprint": model_fingerprint(la.model),
        "input_signature": signature_to_json(la._input_signature),
        "sums": sums_spec,
        "checksums": {key: _sha256(value) for key, value in arrays.items()},
    }
    arrays["metadata"] = np.asarray(json.dumps(metadata))
    return write_atomically(path, lambda file: np.savez_compressed(file, **arrays))


def read(path: str | Path, model: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """A saved Laplace's metadata and arrays, checked: the format, every checksum, and that
    ``model`` is a Keras model matching the one saved (see `loading.load`, which builds the Laplace).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: not a laplace-tf file, a newer format, a truncated or corrupted file, or a
        model that does not match (the message says what differs).
      TypeError: ``model`` is not a Keras model.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be the keras.Model the Laplace was fitted to, got {type(model).__name__}.")
    metadata, arrays = _read(Path(path))
    with malformed_file(path):
        _check_model(metadata, model)
    return metadata, arrays


def laplace_arguments(metadata: dict, arrays: dict[str, np.ndarray], model: Any) -> dict[str, Any]:
    """The keyword arguments of ``Laplace(model, **arguments)`` that rebuild the saved one."""
    return {
        "likelihood": metadata["likelihood"],
        "subset_of_weights": _masks(_decode(metadata["subset_of_weights"], arrays), model),
        "hessian_structure": metadata["hessian_structure"],
        "curvature": metadata["curvature"],
        "prior_precision": arrays["prior_precision"],
        "prior_mean": arrays["prior_mean"],
        "sigma_noise": float(arrays["sigma_noise"]),
        **metadata["options"],
    }


def fit_state(metadata: dict, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The keyword arguments of ``Laplace._restore_fit`` that restore the saved fit."""
    return {
        "mean": tf.constant(arrays["mean"]),
        "sums": _decode(metadata["sums"], arrays),
        "loss": tf.constant(arrays["loss"]),
        "n_data": metadata["n_data"],
        "n_outputs": metadata["n_outputs"],
        "input_signature": signature_from_json(metadata["input_signature"]),
    }


@contextlib.contextmanager
def malformed_file(path: str | Path) -> Iterator[None]:
    """Turns a missing or mistyped entry met while reading ``path`` into a ValueError that says so."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{str(path)!r} is a malformed laplace-tf file ({type(error).__name__}: {error}).") from error


def model_fingerprint(model: Any) -> str:
    """SHA-256 over the model's variables' shapes, dtypes and values, in order (not their names)."""
    digest = hashlib.sha256()
    for variable in model.variables:
        value = np.ascontiguousarray(np.asarray(variable.value))
        digest.update(f"{value.shape}|{value.dtype}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _variables(la: Any) -> list[dict[str, Any]]:
    """Every trainable variable, in order: path (for messages), shape, dtype, entries selected."""
    selection = la.params._selection
    return [
        {"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype), "selected": 0 if s is None else len(s)}
        for v, s in zip(la.model.trainable_variables, selection, strict=True)
    ]


def _selection(la: Any) -> list[np.ndarray | None]:
    """The selected flat indices of each trainable variable (``None`` for none): the subset by position."""
    return [None if s is None else np.asarray(s, np.int64) for s in la.params._selection]


def _masks(subset: Any, model: Any) -> Any:
    """A saved subset: ``"all"``/``"last_layer"`` as they are, selected indices as boolean masks."""
    if isinstance(subset, str):
        return subset
    masks = []
    for indices, variable in zip(subset, model.trainable_variables, strict=True):
        if indices is None:
            masks.append(None)
            continue
        mask = np.zeros(int(np.prod(variable.shape)), bool)
        mask[np.asarray(indices)] = True
        masks.append(mask.reshape(tuple(variable.shape)))
    return masks


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not path.exists():
        raise FileNotFoundError(f"No saved Laplace at {str(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            arrays = {key: archive[key] for key in archive.files}
        metadata = json.loads(str(arrays.pop("metadata")))
    except Exception as error:  # any layer of the format may fail: zip, zlib, npy, JSON
        raise ValueError(
            f"{str(path)!r} is not a readable laplace-tf file (truncated, corrupted, or another format): "
            f"{type(error).__name__}: {error}"
        ) from error
    missing = [key for key in _REQUIRED_METADATA if not isinstance(metadata, dict) or key not in metadata]
    if missing:
        raise ValueError(f"{str(path)!r} is not a laplace-tf file (its metadata lacks {missing}).")
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a laplace-tf file (format {metadata.get('format')!r}).")
    if metadata.get("format_version", 0) < FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written by an earlier laplace-tf (format {metadata.get('format_version')}, which "
            "matched models by variable names); fit the Laplace again and save it with this version."
        )
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format version {metadata['format_version']}, newer than this laplace-tf "
            f"reads ({FORMAT_VERSION}); upgrade laplace-tf."
        )
    corrupted = [key for key, digest in metadata["checksums"].items() if _sha256(arrays.get(key)) != digest]
    if corrupted:
        raise ValueError(f"{str(path)!r} is corrupted: the arrays {corrupted} do not match their checksums.")
    return metadata, arrays


def _check_model(metadata: dict, model: Any) -> None:
    """Raises unless ``model`` has the saved structure and weights, naming what differs."""
    saved, current = metadata["variables"], list(model.trainable_variables)
    if len(saved) != len(current):
        raise ValueError(
            f"The model does not match the saved Laplace: it has {len(current)} trainable variables, the saved "
            f"one had {len(saved)} ({[v['path'] for v in saved]}). Load it onto the same architecture."
        )
    differences = [
        f"variable {i} ({variable.path}) is {list(variable.shape)} {variable.dtype}, saved "
        f"{entry['shape']} {entry['dtype']} ({entry['path']})"
        for i, (entry, variable) in enumerate(zip(saved, current, strict=True))
        if entry["shape"] != list(variable.shape) or entry["dtype"] != str(variable.dtype)
    ]
    if differences:
        raise ValueError(f"The model does not match the saved Laplace: {'; '.join(differences)}.")
    _check_weights(model_fingerprint(model), metadata)


def _check_weights(fingerprint: str, metadata: dict) -> None:
    if fingerprint != metadata["model_fingerprint"]:
        raise ValueError(
            "The model's weights differ from those the saved Laplace was fitted at; load the same trained "
            "weights (e.g. the .keras file saved with the Laplace), or fit again."
        )


def check_selection(metadata: dict, la: Any) -> None:
    saved = sum(v["selected"] for v in metadata["variables"])
    if la.n_params != saved or metadata["dtype"] != la.dtype.name:
        raise ValueError(
            f"The saved Laplace is over {saved} {metadata['dtype']} parameters, but this model gives "
            f"{la.n_params} {la.dtype.name} ones."
        )


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON description of nested tensors, lists, dicts and known dataclasses; arrays go to ``arrays``."""
    if isinstance(value, (tf.Tensor, np.ndarray, tf.Variable)):
        arrays[key] = np.asarray(value)
        return {"array": key}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _DATACLASSES:
        fields = {f.name: _encode(getattr(value, f.name), f"{key}/{f.name}", arrays) for f in dataclasses.fields(value)}
        return {"dataclass": type(value).__name__, "fields": fields}
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v, f"{key}/{k}", arrays) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (str, int, float, bool)):
        return {"value": value}
    raise TypeError(f"Cannot save a {type(value).__name__} in a laplace-tf file.")


def _decode(spec: dict, arrays: dict[str, np.ndarray]) -> Any:
    (kind, content), *_ = spec.items()
    if kind == "array":
        return tf.constant(arrays[content]) if arrays[content].dtype.kind == "f" else arrays[content]
    if kind == "dataclass":
        return _DATACLASSES[content](**{k: _decode(v, arrays) for k, v in spec["fields"].items()})
    if kind == "dict":
        return {k: _decode(v, arrays) for k, v in content.items()}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays) for v in content]
        return items if kind == "list" else tuple(items)
    return content


def _sha256(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
