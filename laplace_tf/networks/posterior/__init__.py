"""Gaussian posteriors over the flat parameters, one structure per module."""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.functional.nystrom import NystromPosterior
from laplace_tf.networks.posterior.diag import DiagPosterior
from laplace_tf.networks.posterior.full import FullPosterior, NotPositiveDefiniteError, log_det_with_scalar_prior
from laplace_tf.networks.posterior.kron import KronPosterior
from laplace_tf.networks.posterior.lowrank import LowRankPosterior
from laplace_tf.options import HessianStructure

Posterior = FullPosterior | DiagPosterior | KronPosterior | LowRankPosterior | NystromPosterior

__all__ = [
    "DiagPosterior",
    "FullPosterior",
    "KronPosterior",
    "LowRankPosterior",
    "NotPositiveDefiniteError",
    "NystromPosterior",
    "Posterior",
    "build_posterior",
    "log_det_with_scalar_prior",
]


def build_posterior(
    structure: HessianStructure,
    mean: tf.Tensor,
    curvature: tf.Tensor,
    curvature_scale: tf.Tensor,
    prior_precision: tf.Tensor,
    *,
    constant: bool = False,
) -> Posterior:
    """The posterior with precision ``curvature_scale * curvature + prior`` (prior ``(P,)``);
    ``constant``: nothing differentiates through it (see `FullPosterior`)."""
    if structure == HessianStructure.FULL:
        return FullPosterior.from_curvature(mean, curvature, curvature_scale, prior_precision, constant=constant)
    return DiagPosterior(mean, curvature_scale * curvature + prior_precision)
