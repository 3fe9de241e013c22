"""laplace-tf: Laplace approximations for TensorFlow and Keras 3 models.

A trained model gets a Gaussian posterior over its weights, centred at the trained weights with
the curvature of the loss as precision, and from it calibrated predictive uncertainty.

Example:
    ```python
    >>> import laplace_tf as lt
    >>> la = lt.Laplace(model, "classification", hessian_structure="full").fit((x, y))
    >>> la.optimize_prior_precision()
    >>> probs = la.predict(x_test)
    ```
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public names and the modules that define them. They load on first use (PEP 562), so the
# `laplace-tf --help` command and `import laplace_tf` do not pay for importing TensorFlow.
_EXPORTS = {
    "calibration": "laplace_tf.calibration",
    "Diagnosis": "laplace_tf.diagnostics",
    "hessian": "laplace_tf.hessians",
    "hessian_diagonal": "laplace_tf.hessians",
    "hvp": "laplace_tf.hessians",
    "split_hessian": "laplace_tf.hessians",
    "load": "laplace_tf.io",
    "Laplace": "laplace_tf.laplace",
    "NotFittedError": "laplace_tf.laplace",
    "LaplaceResult": "laplace_tf.laplace_result",
    "fit_laplace": "laplace_tf.models",
    "laplace_approximation": "laplace_tf.models",
    "CurvatureType": "laplace_tf.options",
    "HessianStructure": "laplace_tf.options",
    "Likelihood": "laplace_tf.options",
    "LinkApprox": "laplace_tf.options",
    "PredType": "laplace_tf.options",
    "PriorStructure": "laplace_tf.options",
    "SubsetOfWeights": "laplace_tf.options",
    "DiagPosterior": "laplace_tf.posterior",
    "FullPosterior": "laplace_tf.posterior",
    "KronPosterior": "laplace_tf.posterior",
    "LowRankPosterior": "laplace_tf.posterior",
    "NotPositiveDefiniteError": "laplace_tf.posterior",
    "UncertaintyReport": "laplace_tf.report",
    "classification_report": "laplace_tf.report",
    "multilabel_report": "laplace_tf.report",
    "regression_report": "laplace_tf.report",
    "subnetwork_mask": "laplace_tf.subnetwork",
    "LikelihoodLoss": "laplace_tf.likelihood_loss",
    "MarglikCallback": "laplace_tf.training",
    "MarglikResult": "laplace_tf.training",
    "marglik_training": "laplace_tf.training",
}


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'laplace_tf' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"laplace_tf.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from laplace_tf import calibration
    from laplace_tf.diagnostics import Diagnosis
    from laplace_tf.hessians import hessian, hessian_diagonal, hvp, split_hessian
    from laplace_tf.io import load
    from laplace_tf.laplace import Laplace, NotFittedError
    from laplace_tf.laplace_result import LaplaceResult
    from laplace_tf.likelihood_loss import LikelihoodLoss
    from laplace_tf.models import fit_laplace, laplace_approximation
    from laplace_tf.options import (
        CurvatureType,
        HessianStructure,
        Likelihood,
        LinkApprox,
        PredType,
        PriorStructure,
        SubsetOfWeights,
    )
    from laplace_tf.posterior import (
        DiagPosterior,
        FullPosterior,
        KronPosterior,
        LowRankPosterior,
        NotPositiveDefiniteError,
    )
    from laplace_tf.report import UncertaintyReport, classification_report, multilabel_report, regression_report
    from laplace_tf.subnetwork import subnetwork_mask
    from laplace_tf.training import MarglikCallback, MarglikResult, marglik_training

__version__ = "0.1.0"

__all__ = [
    "CurvatureType",
    "DiagPosterior",
    "Diagnosis",
    "FullPosterior",
    "HessianStructure",
    "KronPosterior",
    "Laplace",
    "LaplaceResult",
    "Likelihood",
    "LikelihoodLoss",
    "LinkApprox",
    "LowRankPosterior",
    "MarglikCallback",
    "MarglikResult",
    "NotFittedError",
    "NotPositiveDefiniteError",
    "PredType",
    "PriorStructure",
    "SubsetOfWeights",
    "UncertaintyReport",
    "calibration",
    "classification_report",
    "fit_laplace",
    "hessian",
    "hessian_diagonal",
    "hvp",
    "laplace_approximation",
    "load",
    "marglik_training",
    "multilabel_report",
    "regression_report",
    "split_hessian",
    "subnetwork_mask",
]
