"""The two ArviZ generations behind one interface: 0.x (``InferenceData``) and 1.x (xarray ``DataTree``).

laplace-tf builds its groups as ``xarray.Dataset`` objects (the common ground of both) and lets
ArviZ wrap them; Pareto smoothing uses each generation's own PSIS. ArviZ and xarray are imported
on first use: they bring pandas and matplotlib (about 0.4 s), which a script that never asks for
ArviZ data or diagnostics need not pay when it first touches ``lt.Laplace``.

Example:
    ```python
    >>> data = make_arviz_data({"posterior": posterior_dataset, "fit": fit_dataset})
    >>> pareto_khat(log_weights.reshape(4, 250))
    ```
"""

from __future__ import annotations

import importlib
import warnings
from datetime import datetime, timezone
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

EQUAL_LOG_WEIGHTS = 1e-8


@cache
def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def arviz_major_version() -> int:
    """The installed ArviZ's major version: 0 (``InferenceData``) or 1 and later (``DataTree``)."""
    return int(_module("arviz").__version__.split(".")[0])


def dataset(variables: dict[str, tuple[tuple[str, ...], Any]], coords: dict[str, Any] | None = None) -> xr.Dataset:
    """An ``xarray.Dataset`` with ArviZ's provenance attributes."""
    from laplace_tf import __version__

    attrs = {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "inference_library": "laplace_tf",
        "inference_library_version": __version__,
        "arviz_version": _module("arviz").__version__,
    }
    arrays = {name: (dims, np.asarray(values)) for name, (dims, values) in variables.items()}
    return _module("xarray").Dataset(arrays, coords, attrs)


def make_arviz_data(groups: dict[str, xr.Dataset]) -> Any:
    """ArviZ data from groups: ``InferenceData`` with arviz 0.x, ``xarray.DataTree`` with arviz >= 1."""
    if arviz_major_version() >= 1:
        return _module("xarray").DataTree.from_dict({f"/{name}": group for name, group in groups.items()})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*group is not defined in the InferenceData scheme.*")
        return _module("arviz").InferenceData(**groups)


def group_names(data: Any) -> list[str]:
    """The group names of ArviZ data of either generation."""
    if arviz_major_version() >= 1:
        return list(data.children)
    return list(data.groups())


def pareto_khat(log_weights: np.ndarray) -> float:
    """The Pareto k-hat of PSIS importance weights ``(chains, draws)``, by ArviZ's own PSIS.

    Weights equal to round-off (log weights within ``1e-8`` of each other) have no tail to fit:
    importance sampling is exact, and k-hat is ``-inf``.
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if np.ptp(log_weights) < EQUAL_LOG_WEIGHTS:
        return -np.inf
    if arviz_major_version() >= 1:
        weights = _module("xarray").DataArray(log_weights, dims=("chain", "draw"))
        _, khat = weights.azstats.psislw(dim=["chain", "draw"])
        return float(khat)
    _, khat = _module("arviz").psislw(log_weights.ravel())
    return float(khat)
