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
    "calibration": "laplace_tf.reports.calibration",
    "Diagnosis": "laplace_tf.reports.diagnostics",
    "hessian": "laplace_tf.hessians",
    "hessian_diagonal": "laplace_tf.hessians",
    "hvp": "laplace_tf.hessians",
    "split_hessian": "laplace_tf.hessians",
    "load": "laplace_tf.networks.loading",
    "Laplace": "laplace_tf.networks.laplace",
    "NotFittedError": "laplace_tf.networks.laplace",
    "LaplaceResult": "laplace_tf.models.laplace_result",
    "fit_laplace": "laplace_tf.models.approximation",
    "laplace_approximation": "laplace_tf.models.approximation",
    "CurvatureType": "laplace_tf.options",
    "HessianStructure": "laplace_tf.options",
    "Likelihood": "laplace_tf.options",
    "LinkApprox": "laplace_tf.options",
    "PredType": "laplace_tf.options",
    "PriorStructure": "laplace_tf.options",
    "SubsetOfWeights": "laplace_tf.options",
    "DiagPosterior": "laplace_tf.networks.posterior",
    "FullPosterior": "laplace_tf.networks.posterior",
    "KronPosterior": "laplace_tf.networks.posterior",
    "LowRankPosterior": "laplace_tf.networks.posterior",
    "NotPositiveDefiniteError": "laplace_tf.networks.posterior",
    "UncertaintyReport": "laplace_tf.reports.report",
    "classification_report": "laplace_tf.reports.report",
    "multilabel_report": "laplace_tf.reports.report",
    "regression_report": "laplace_tf.reports.report",
    "subnetwork_mask": "laplace_tf.networks.subnetworks",
    "LikelihoodLoss": "laplace_tf.networks.likelihood_loss",
    "MarglikCallback": "laplace_tf.networks.training",
    "MarglikResult": "laplace_tf.networks.training",
    "marglik_training": "laplace_tf.networks.training",
}


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'laplace_tf' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from laplace_tf.hessians import hessian, hessian_diagonal, hvp, split_hessian
    from laplace_tf.models.approximation import fit_laplace, laplace_approximation
    from laplace_tf.models.laplace_result import LaplaceResult
    from laplace_tf.networks.laplace import Laplace, NotFittedError
    from laplace_tf.networks.likelihood_loss import LikelihoodLoss
    from laplace_tf.networks.loading import load
    from laplace_tf.networks.posterior import (
        DiagPosterior,
        FullPosterior,
        KronPosterior,
        LowRankPosterior,
        NotPositiveDefiniteError,
    )
    from laplace_tf.networks.subnetworks import subnetwork_mask
    from laplace_tf.networks.training import MarglikCallback, MarglikResult, marglik_training
    from laplace_tf.options import (
        CurvatureType,
        HessianStructure,
        Likelihood,
        LinkApprox,
        PredType,
        PriorStructure,
        SubsetOfWeights,
    )
    from laplace_tf.reports import calibration
    from laplace_tf.reports.diagnostics import Diagnosis
    from laplace_tf.reports.report import UncertaintyReport, classification_report, multilabel_report, regression_report

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
