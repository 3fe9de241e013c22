r"""One Gaussian process per output: the ``gp`` posterior with ``independent_outputs=True``.

Output ``k`` has its own low-rank posterior over the weights, precision
$D + W_k W_k^\top$ with $W_k = J_{M,k}^\top \Lambda_{kk}^{1/2}$ (`posterior.lowrank`), and the
predictive covariance of an input is diagonal: $\operatorname{diag}_k\big(J_k \Sigma_k
J_k^\top\big)$. The evidence adds the outputs' log-determinant ratios. There is no single Gaussian
over the weights, so no draws, no density and no weight-space (co)variances.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="gp", independent_outputs=True)
    >>> la.fit((x, y)).predict(x_test)
    ```
"""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.curvature.lowrank import LowRankCurvature
from laplace_tf.networks.functional.without_density import WithoutDensity
from laplace_tf.networks.posterior.lowrank import LowRankPosterior

NO_WEIGHT_SPACE = (
    "With independent_outputs=True each output has its own Gaussian over the weights, so there are no "
    "joint draws, density or weight-space covariance; predictions (pred_type='glm') and the evidence work. "
    "Use independent_outputs=False for the rest."
)


class IndependentOutputsPosterior(WithoutDensity):
    """``K`` low-rank posteriors, one per output, sharing the mean and the prior.

    Args:
      mean: the MAP, ``(P,)``.
      curvature: one low-rank curvature per output.
      curvature_scale: $s$.
      prior_precision: the per-parameter prior precision, ``(P,)``.
    """

    structure = "gp (independent outputs)"
    reason = NO_WEIGHT_SPACE

    def __init__(
        self,
        mean: tf.Tensor,
        curvature: list[LowRankCurvature],
        curvature_scale: tf.Tensor,
        prior_precision: tf.Tensor,
    ):
        self.mean = mean
        self.prior = prior_precision
        self.outputs = [LowRankPosterior(mean, part, curvature_scale, prior_precision) for part in curvature]

    @property
    def log_det_precision(self) -> tf.Tensor:
        """$\\log\\det D + \\sum_k (\\log\\det P_k - \\log\\det D)$: the evidence's ratio summed over outputs."""
        log_det_prior = tf.reduce_sum(tf.math.log(self.prior))
        return log_det_prior + tf.add_n([output.log_det_precision - log_det_prior for output in self.outputs])

    def functional_variance(self, jacobians: tf.Tensor) -> tf.Tensor:
        """Diagonal ``(B, K, K)``: output ``k``'s variance from its own posterior."""
        variances = [
            output.functional_variance(jacobians[:, k : k + 1, :])[:, 0, 0] for k, output in enumerate(self.outputs)
        ]
        return tf.linalg.diag(tf.stack(variances, axis=1))

    @property
    def variance(self) -> tf.Tensor:
        raise ValueError(NO_WEIGHT_SPACE)

    @property
    def covariance(self) -> tf.Tensor:
        raise ValueError(NO_WEIGHT_SPACE)

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        raise ValueError(NO_WEIGHT_SPACE)
