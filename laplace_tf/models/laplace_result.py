r"""The result of [`fit_laplace`][laplace_tf.fit_laplace] and
[`laplace_approximation`][laplace_tf.laplace_approximation].

The Gaussian $u \sim \mathcal{N}(\hat u, \Sigma)$ lives in unconstrained space; draws are
mapped to the model's constrained space by its bijector. Per draw, ``log_q`` is the Gaussian's
log density and ``log_p`` the model's log density of $u$ (with the log-det-Jacobian, whatever
the ``jacobian`` setting of the fit, so that ``log_p - log_q`` are the right importance weights).

Example:
    ```python
    >>> result = lt.fit_laplace(model, observed={"y": y}, seed=0)
    >>> result.mean, result.covariance          # unconstrained
    >>> result.draws["sigma"]                   # constrained draws, (num_draws, *shape)
    >>> data = result.to_inference_data(); print(result.diagnose())
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp

import laplace_tf as lt
from laplace_tf.models.flat_state import FlatState
from laplace_tf.models.mode_finding import OptimizerResult
from laplace_tf.networks.posterior import FullPosterior

tfd = tfp.distributions


class LaplaceResult:
    """A Gaussian approximation of a probabilistic model's posterior, with seeded draws.

    Attributes:
      posterior: the [`FullPosterior`][laplace_tf.FullPosterior] over the flat unconstrained state.
      optimizer_result: the `OptimizerResult` of the mode search.
      names: the free variables' names; ``row_names`` names each flat entry (``"b[0]"``).
      jacobian: whether the objective included the log-det-Jacobian.
      unconstrained_draws: ``(num_draws, D)``; ``draws``: constrained draws by name.
    """

    def __init__(
        self,
        *,
        posterior: FullPosterior,
        state: FlatState,
        bijector: Any,
        optimizer_result: OptimizerResult,
        log_density: Callable[[tf.Tensor], tf.Tensor],
        jacobian: bool,
        num_draws: int,
        num_chains: int,
        seed: tf.Tensor,
        observed_data: Mapping[str, Any] | None,
    ):
        self.posterior = posterior
        self.optimizer_result = optimizer_result
        self.jacobian = jacobian
        self.num_chains = num_chains
        self.observed_data = dict(observed_data or {})
        self._state = state
        self._bijector = bijector
        self._log_density = log_density
        self.unconstrained_draws = posterior.sample(num_draws, seed=int(seed[0]))
        self.draws = self.constrain(self.unconstrained_draws)

    @property
    def names(self) -> list[str]:
        return self._state.names

    @property
    def row_names(self) -> list[str]:
        return self._state.row_names

    @property
    def mean(self) -> tf.Tensor:
        """The mode in unconstrained space, ``(D,)``: the Gaussian's mean."""
        return self.posterior.mean

    @property
    def covariance(self) -> tf.Tensor:
        """The Gaussian's covariance in unconstrained space, ``(D, D)``: the inverse negative Hessian."""
        return self.posterior.covariance

    @property
    def precision(self) -> tf.Tensor:
        """The negative Hessian of the objective at the mode, ``(D, D)``."""
        return self.posterior.precision

    @property
    def mode(self) -> dict[str, tf.Tensor]:
        """The mode mapped to constrained space, by name (with ``jacobian=False``: the MAP)."""
        return {name: value[0] for name, value in self.constrain(self.mean[None]).items()}

    def distribution(self) -> tfd.Distribution:
        """The Gaussian over the flat unconstrained state as a TFP distribution."""
        return self.posterior.distribution()

    def constrain(self, flat: tf.Tensor) -> dict[str, tf.Tensor]:
        """Flat unconstrained draws ``(S, D)`` to constrained values by name, each ``(S, *shape)``."""
        return self._state.named(self._bijector.forward(self._state.unflatten(flat)))

    def unconstrained(self, flat: tf.Tensor) -> dict[str, tf.Tensor]:
        """Flat unconstrained draws ``(S, D)`` as unconstrained values by name, each ``(S, *shape)``."""
        return self._state.named(self._state.unflatten(flat))

    def sample(self, num_draws: int, seed: int | None = None) -> dict[str, tf.Tensor]:
        """New constrained draws by name, each ``(num_draws, *shape)``."""
        return self.constrain(self.posterior.sample(num_draws, seed))

    def log_p(self, flat: tf.Tensor) -> tf.Tensor:
        """The model's log density of unconstrained draws ``(S, D)``, Jacobian included, ``(S,)``."""
        return tf.vectorized_map(self._log_density, flat)

    def log_q(self, flat: tf.Tensor) -> tf.Tensor:
        """The Gaussian's log density of unconstrained draws ``(S, D)``, ``(S,)``."""
        return self.posterior.log_prob(flat)

    def diagnose(self) -> lt.Diagnosis:
        """The Pareto k-hat of the importance weights ``log_p - log_q`` of the draws."""
        from laplace_tf.reports import result_reports

        return result_reports.diagnose(self)

    def to_inference_data(self) -> Any:
        """ArviZ data: ``posterior`` (constrained), ``unconstrained_posterior``, ``fit``,
        ``sample_stats`` (``log_p``, ``log_q``) and ``observed_data``.

        Returns ``arviz.InferenceData`` with arviz 0.x, an ``xarray.DataTree`` with arviz >= 1.
        """
        from laplace_tf.reports import result_reports

        return result_reports.to_inference_data(self)

    def __repr__(self) -> str:
        result = self.optimizer_result
        status = "converged" if result.converged else "NOT converged"
        return (
            f"LaplaceResult({', '.join(self.names)}; {len(self.row_names)} unconstrained dimensions; "
            f"{result.optimizer} {status} in {result.num_iterations} iterations, "
            f"largest gradient entry {result.gradient_norm:.2g}; {int(self.unconstrained_draws.shape[0])} draws)"
        )
