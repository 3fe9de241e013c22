"""The reporting half of :class:`laplace_tf.Laplace`: uncertainty reports, ArviZ data, PSIS diagnostics.

Example::

    >>> print(la.evaluate(x_test, y_test))
    >>> data = la.to_inference_data(x_train, y_train, num_draws=400, seed=0)
    >>> print(la.diagnose((x_train, y_train), seed=0))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from laplace_tf import calibration, diagnostics, evaluation, inference_data
from laplace_tf.diagnostics import Diagnosis
from laplace_tf.report import UncertaintyReport


class LaplaceReports:
    """Reports of a fitted Laplace; :class:`laplace_tf.Laplace` provides the posterior and predictive."""

    def evaluate(
        self,
        x: Any,
        y: Any,
        x_ood: Any = None,
        *,
        pred_type: str = "glm",
        link_approx: str = "probit",
        n_samples: int = 100,
        seed: int | None = None,
        n_bins: int = 15,
        levels: Sequence[float] = calibration.DEFAULT_LEVELS,
    ) -> UncertaintyReport:
        """The MAP network and the Laplace predictive side by side on ``(x, y)``.

        Args:
          x, y: test inputs and targets (labels ``(N,)`` or one-hot, or regression targets).
          x_ood: out-of-distribution inputs: adds the AUROC of telling them from ``x`` (by
            entropy and confidence; by predictive standard deviation for regression).
          pred_type, link_approx, n_samples, seed: the Laplace predictive, as in :meth:`predict`.
          n_bins: confidence bins of the ECE, MCE and reliability diagram.
          levels: central-interval levels of the regression coverage and width.

        Returns:
          An :class:`~laplace_tf.report.UncertaintyReport`: print it, ``to_json``, ``plot``.
        """
        self._require_fitted()
        options = {"pred_type": pred_type, "link_approx": link_approx, "n_samples": n_samples, "seed": seed}
        return evaluation.evaluate(self, x, y, x_ood, **options, n_bins=n_bins, levels=levels)

    def to_inference_data(
        self,
        x: Any = None,
        y: Any = None,
        *,
        num_draws: int = 1000,
        num_chains: int = 4,
        pred_type: str = "glm",
        seed: int | None = None,
        max_covariance_rows: int = 1000,
    ) -> Any:
        """ArviZ data: ``posterior``, ``sample_stats`` and ``fit``, and with ``x, y`` the predictive groups.

        Args:
          x, y: data (the training data, for ``az.loo`` and a ``log_p`` of the posterior): adds
            ``observed_data``, ``posterior_predictive``, ``log_likelihood`` and ``log_p``.
          num_draws: parameter draws in all, split into ``num_chains`` chains.
          pred_type: outputs at the draws: ``"glm"`` (the linearised network) or ``"nn"``.
          seed: makes the draws reproducible.
          max_covariance_rows: the ``fit`` group holds the dense covariance up to this many parameters.

        Returns:
          ``arviz.InferenceData`` with arviz 0.x, an ``xarray.DataTree`` with arviz >= 1.
          See :mod:`laplace_tf.inference_data` for the groups.
        """
        self._require_fitted()
        return inference_data.to_inference_data(
            self,
            x,
            y,
            num_draws=num_draws,
            num_chains=num_chains,
            pred_type=pred_type,
            seed=seed,
            max_covariance_rows=max_covariance_rows,
        )

    def diagnose(
        self,
        data: Any,
        *,
        num_draws: int = 1000,
        seed: int | None = None,
        batch_size: int | None = None,
        verbose: bool = True,
    ) -> Diagnosis:
        """The Pareto k-hat of the importance weights ``log_p - log_q``: is the Gaussian trustworthy?

        Args:
          data: ``(x, y)`` or a ``tf.data.Dataset``: the training data, or a subset of it (its
            log-likelihood is scaled to the ``n_data`` examples of the fit), streamed in batches.
          num_draws: draws from the Gaussian (at least 100; 1000 is typical).
          seed: makes the draws reproducible.
          batch_size: examples per batch for arrays.
          verbose: a progress bar over the data's batches, when there are many.

        Returns:
          A :class:`~laplace_tf.diagnostics.Diagnosis`; ``print`` it for the verdict in words.
        """
        self._require_fitted()
        return diagnostics.diagnose(self, data, num_draws=num_draws, seed=seed, batch_size=batch_size, verbose=verbose)
