"""The evidence half of [`Laplace`][laplace_tf.Laplace]: log-likelihood, marginal likelihood, prior tuning.

With $P$ the posterior precision and $P_0$ the prior precision,

$$
\\log p(\\mathcal{D}) \\approx \\log p(\\mathcal{D} \\mid \\theta_*) - \\tfrac12 \\big(\\log\\det P
- \\log\\det P_0 + (\\theta_* - \\mu_0)^\\top P_0 (\\theta_* - \\mu_0)\\big),
$$

differentiable in the prior precision and the regression noise, which
`LaplaceEvidence.optimize_prior_precision` maximises (or tunes by grid search).

Example:
    ```python
    >>> la.optimize_prior_precision(method="marglik", prior_structure="layerwise")
    >>> float(la.log_marginal_likelihood())
    ```
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from laplace_tf.networks.marglik import log_marginal_likelihood
from laplace_tf.networks.prior import as_tensor, expand_prior_precision, validate_prior_precision
from laplace_tf.networks.tuning import grid_search_prior_precision, tune_prior_precision
from laplace_tf.networks.validation import check_flag, positive_int, positive_number
from laplace_tf.options import GridMetric, PriorStructure, TuningMethod, parse_option
from laplace_tf.options import Likelihood as LikelihoodName


class LaplaceEvidence:
    """Evidence methods; [`Laplace`][laplace_tf.Laplace] provides the curvature and the posterior."""

    def log_likelihood(self, sigma_noise: Any = None) -> tf.Tensor:
        """The tempered log-likelihood of the training data at the MAP."""
        self._require_fitted()
        sigma = self._sigma_noise if sigma_noise is None else as_tensor(sigma_noise, self.dtype, "sigma_noise")
        if self.likelihood.name == LikelihoodName.REGRESSION:
            data_fit = self._loss / (tf.square(sigma) * self.temperature)
            return -data_fit - self.likelihood.log_normalizer(self.n_data, self.n_outputs, sigma)
        return -self._loss / self.temperature

    def log_marginal_likelihood(self, prior_precision: Any = None, sigma_noise: Any = None) -> tf.Tensor:
        """The Laplace approximation of the log evidence, differentiable in both arguments.

        Args:
          prior_precision: use this prior precision instead of ``self.prior_precision``.
          sigma_noise: use this observation noise instead of ``self.sigma_noise`` (regression).
        """
        self._require_fitted()
        prior = self._prior_precision if prior_precision is None else prior_precision
        prior = validate_prior_precision(prior, self.params.sizes, self.dtype)
        sigma = self._sigma_noise if sigma_noise is None else as_tensor(sigma_noise, self.dtype, "sigma_noise")
        if sigma_noise is not None and tf.executing_eagerly():
            positive_number(float(sigma), "sigma_noise")
        return log_marginal_likelihood(
            self.log_likelihood(sigma),
            self._log_det_posterior_precision(prior, sigma),
            expand_prior_precision(prior, self.params.sizes, self.n_params),
            self.mean,
            self.prior_mean,
        )

    def optimize_prior_precision(
        self,
        method: str = "marglik",
        prior_structure: str = "scalar",
        *,
        val_data: tuple | None = None,
        grid: Any = None,
        metric: str = "nll",
        optimize_sigma_noise: bool = False,
        max_iterations: int = 200,
        tolerance: float = 1e-6,
        verbose: bool = False,
    ) -> tf.Tensor:
        """Tunes the prior precision (and optionally ``sigma_noise``) and stores it.

        ``method="marglik"`` maximises `log_marginal_likelihood` over the log prior
        precision with L-BFGS, which stops when the gradient vanishes (to ``tolerance``), not after
        a fixed budget; ``method="gridsearch"`` picks the scalar prior precision on ``grid``
        (default ``np.logspace(-4, 4, 41)``) whose predictive scores best on ``val_data``.

        Args:
          method: ``"marglik"`` or ``"gridsearch"``.
          prior_structure: ``"scalar"``, ``"layerwise"`` (one per variable) or ``"diag"``
            (marglik; grid search is scalar).
          val_data: ``(x_val, y_val)`` for grid search.
          grid: the prior precisions grid search tries.
          metric: what grid search minimises: ``"nll"``, ``"ece"`` or ``"brier"``.
          optimize_sigma_noise: also tune the observation noise jointly (marglik, regression).
          max_iterations: the L-BFGS iteration cap; a warning says if it was reached.
          tolerance: the gradient-norm tolerance of the stopping rule.
          verbose: show progress (evidence evaluations, or grid points).

        Returns:
          The tuned prior precision, also stored in ``self.prior_precision``.
        """
        positive_int(max_iterations, "max_iterations")
        positive_number(tolerance, "tolerance")
        check_flag(optimize_sigma_noise, "optimize_sigma_noise")
        check_flag(verbose, "verbose")
        tuning = parse_option(TuningMethod, method, "method")
        structure = parse_option(PriorStructure, prior_structure, "prior_structure")
        chosen_metric = parse_option(GridMetric, metric, "metric")
        if tuning == TuningMethod.MARGLIK and (val_data is not None or grid is not None or metric != "nll"):
            raise ValueError(
                "val_data, grid and metric are for method='gridsearch'; method='marglik' maximises the "
                "evidence of the data the Laplace was fitted on and takes none of them."
            )
        if optimize_sigma_noise and (
            self.likelihood.name != LikelihoodName.REGRESSION or tuning != TuningMethod.MARGLIK
        ):
            raise ValueError("optimize_sigma_noise=True needs likelihood='regression' and method='marglik'.")
        self._require_fitted()
        if structure == PriorStructure.DIAG:
            self._check_prior_fits_structure(tf.ones([self.n_params], self.dtype))
        if tuning == TuningMethod.GRIDSEARCH:
            if structure != PriorStructure.SCALAR:
                raise ValueError("method='gridsearch' tunes a scalar prior precision: use prior_structure='scalar'.")
            best, self.grid_scores = grid_search_prior_precision(self, val_data, grid, chosen_metric, verbose)
            self.prior_precision = best
            return self.prior_precision
        prior, sigma = tune_prior_precision(
            self, structure, optimize_sigma_noise, max_iterations=max_iterations, tolerance=tolerance, verbose=verbose
        )
        self.prior_precision = prior
        if sigma is not None:
            self.sigma_noise = float(sigma)
        return self.prior_precision
