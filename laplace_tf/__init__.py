"""laplace-tf: Laplace approximations for TensorFlow and Keras 3 models.

A trained model gets a Gaussian posterior over its weights, centred at the trained weights with
the curvature of the loss as precision, and from it calibrated predictive uncertainty.

Example::

    >>> import laplace_tf as lt
    >>> la = lt.Laplace(model, "classification", hessian_structure="full").fit((x, y))
    >>> la.optimize_prior_precision()
    >>> probs = la.predict(x_test)
"""

from laplace_tf import calibration
from laplace_tf.diagnostics import Diagnosis
from laplace_tf.hessian import hessian, hessian_diagonal, hvp, split_hessian
from laplace_tf.io import load
from laplace_tf.laplace import Laplace, NotFittedError
from laplace_tf.laplace_result import LaplaceResult
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
from laplace_tf.posterior import DiagPosterior, FullPosterior, NotPositiveDefiniteError
from laplace_tf.report import UncertaintyReport, classification_report, regression_report

__version__ = "0.1.0"

__all__ = [
    "CurvatureType",
    "DiagPosterior",
    "Diagnosis",
    "FullPosterior",
    "HessianStructure",
    "Laplace",
    "LaplaceResult",
    "Likelihood",
    "LinkApprox",
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
    "regression_report",
    "split_hessian",
]
