"""String-valued options of the public API, and their parsing.

Every option the user passes as a string is parsed by `parse_option`, so an
unknown value is a ``ValueError`` that lists the valid ones::

    >>> parse_option(HessianStructure, "ful", "hessian_structure")
    Traceback (most recent call last):
    ...
    ValueError: hessian_structure='ful' is not valid; choose one of 'full', 'diag', 'kron', 'lowrank'.
"""

from __future__ import annotations

import enum
from typing import TypeVar


class Likelihood(str, enum.Enum):
    """The observation model of the network's outputs."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"
    BINARY = "binary"
    MULTILABEL = "multilabel"
    HETEROSCEDASTIC = "heteroscedastic"
    REWARD_MODELING = "reward_modeling"


class HessianStructure(str, enum.Enum):
    """How the posterior precision is stored."""

    FULL = "full"
    DIAG = "diag"
    KRON = "kron"
    LOWRANK = "lowrank"
    GP = "gp"


class CurvatureType(str, enum.Enum):
    """Which curvature of the negative log-likelihood is used."""

    GGN = "ggn"
    EF = "ef"
    HESSIAN = "hessian"


class SubsetOfWeights(str, enum.Enum):
    """Which of the model's trainable weights get a posterior (or give patterns or masks)."""

    ALL = "all"
    LAST_LAYER = "last_layer"


class PredType(str, enum.Enum):
    """How the predictive integrates over the posterior."""

    GLM = "glm"
    NN = "nn"


class KfacApprox(str, enum.Enum):
    """How ``kron`` factors a weight shared by several positions of one example (sequence steps,
    image patches, the calls of a shared layer): Eschenhagen et al. 2023's two K-FAC conventions."""

    EXPAND = "expand"
    REDUCE = "reduce"


class LinkApprox(str, enum.Enum):
    """How the GLM predictive pushes a Gaussian over logits through the link."""

    PROBIT = "probit"
    MC = "mc"
    BRIDGE = "bridge"
    BRIDGE_NORM = "bridge_norm"


class TuningMethod(str, enum.Enum):
    """How the prior precision is tuned."""

    MARGLIK = "marglik"
    GRIDSEARCH = "gridsearch"


class GridMetric(str, enum.Enum):
    """What a grid search minimises on validation data."""

    NLL = "nll"
    ECE = "ece"
    BRIER = "brier"


class PriorStructure(str, enum.Enum):
    """The shape of a tuned prior precision."""

    SCALAR = "scalar"
    LAYERWISE = "layerwise"
    DIAG = "diag"


OptionT = TypeVar("OptionT", bound=enum.Enum)


def parse_option(option_type: type[OptionT], value: str | OptionT, name: str) -> OptionT:
    """Returns ``value`` as a member of ``option_type`` or raises a ``ValueError``.

    Args:
      option_type: the enum class of valid values.
      value: a member of ``option_type`` or its string value (case-insensitive).
      name: the argument's name, used in the error message.
    """
    if isinstance(value, option_type):
        return value
    if isinstance(value, str):
        for member in option_type:
            if member.value == value.lower():
                return member
    valid = ", ".join(repr(member.value) for member in option_type)
    raise ValueError(f"{name}={value!r} is not valid; choose one of {valid}.")
