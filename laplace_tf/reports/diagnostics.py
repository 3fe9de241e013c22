r"""Is the Gaussian a trustworthy approximation of the posterior? Pareto-smoothed importance sampling.

Draws $\theta_s \sim q$ from the Laplace Gaussian are weighted by $w_s = p(\theta_s
\mid \mathcal{D}) / q(\theta_s)$, with $\log p$ the unnormalised log posterior
(`log_density`). The shape $\hat k$ of a generalised Pareto distribution
fitted to the largest weights (PSIS, Vehtari et al. 2024, by ArviZ) says how heavy their tail
is: $\hat k < 0.5$, the approximation is good (importance sampling from it converges fast);
$< 0.7$, usable (importance-weighted estimates are reliable); above, not trustworthy: the
posterior has mass, or a shape, the Gaussian misses.

Example:
    ```python
    >>> diagnosis = la.diagnose((x_train, y_train), num_draws=1000, seed=0)
    >>> print(diagnosis)          # k-hat 0.31 from 1000 draws: good ...
    ```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from laplace_tf.reports.arviz_compat import pareto_khat
from laplace_tf.reports.log_density import log_posterior_density, log_posterior_gradient, log_weights, mode_distance

GOOD_KHAT = 0.5
USABLE_KHAT = 0.7
OFF_MODE_DISTANCE = 1.0
MIN_DRAWS = 100


@dataclass(frozen=True)
class Diagnosis:
    """The PSIS diagnostic of a Laplace approximation.

    Attributes:
      k_hat: the Pareto shape estimate of the importance weights (``-inf`` when they are all
        equal: the Gaussian is the posterior, as for Bayesian linear regression).
      n_draws: draws from the Gaussian used.
      n_examples: examples whose log-likelihood entered log_p; ``n_data`` in the fit (``None``
        for probabilistic models, whose log_p is the model's whole log density).
      effective_sample_size: of the normalised (unsmoothed) importance weights,
        $1 / \\sum_s \\bar w_s^2$.
      log_p, log_q: per draw, the log posterior (up to a constant) and the Gaussian's log density.
      mode_distance: $\\sqrt{g^\\top \\Sigma g}$ for the log posterior's gradient $g$ at
        the mean: how many posterior standard deviations a Newton step would move the mean. Above 1,
        the trained weights are not the mode of the posterior under this prior (training stopped
        early, or the prior was tuned after training), so the Gaussian is centred off the mode.
    """

    k_hat: float
    n_draws: int
    n_examples: int | None
    n_data: int | None
    effective_sample_size: float
    log_p: np.ndarray
    log_q: np.ndarray
    mode_distance: float

    @classmethod
    def from_log_densities(
        cls, log_p: Any, log_q: Any, mode_distance: float, n_examples: int | None = None, n_data: int | None = None
    ) -> Diagnosis:
        """The diagnosis of draws with log posterior ``log_p`` and Gaussian log density ``log_q``."""
        weights = log_weights(log_p, log_q)
        normalised = np.exp(weights) / np.exp(weights).sum()
        return cls(
            k_hat=pareto_khat(weights[None, :]),
            n_draws=len(weights),
            n_examples=n_examples,
            n_data=n_data,
            effective_sample_size=float(1.0 / np.sum(normalised**2)),
            log_p=np.asarray(log_p, dtype=np.float64),
            log_q=np.asarray(log_q, dtype=np.float64),
            mode_distance=mode_distance,
        )

    @property
    def verdict(self) -> str:
        """``"good"`` (k-hat < 0.5), ``"usable"`` (< 0.7) or ``"unreliable"``."""
        if self.k_hat < GOOD_KHAT:
            return "good"
        return "usable" if self.k_hat < USABLE_KHAT else "unreliable"

    def __str__(self) -> str:
        meaning = {
            "good": "the Gaussian is a good approximation of the posterior",
            "usable": "the Gaussian is usable, but importance-weighted estimates converge slowly",
            "unreliable": (
                "the Gaussian misses much of the posterior; do not trust its uncertainty without a check "
                "(tune the prior, try a richer structure or subset, or sample with MCMC)"
            ),
        }[self.verdict]
        text = (
            f"Pareto k-hat {self.k_hat:.2f} from {self.n_draws} draws ({self.verdict}): {meaning}. "
            f"Importance-sampling effective sample size {self.effective_sample_size:.0f}"
        )
        if self.n_data is None:
            text += "."
        elif self.n_examples == self.n_data:
            text += f"; log p over all {self.n_data} examples."
        else:
            text += f"; log p over {self.n_examples} of {self.n_data} examples (scaled)."
        if self.mode_distance > OFF_MODE_DISTANCE:
            text += (
                f" The mean is {self.mode_distance:.1f} posterior standard deviations from the posterior's "
                "mode (by the gradient there): for a network, train to convergence with the prior as weight "
                "decay, or keep the prior the weights were trained with; for a model, let the optimiser converge."
            )
        return text


def diagnose(
    la: Any,
    data: Any,
    *,
    num_draws: int = 1000,
    seed: int | None = None,
    batch_size: int | None = None,
    verbose: bool = True,
) -> Diagnosis:
    """The Pareto k-hat of the importance weights ``log_p - log_q`` (``la.diagnose``): is the Gaussian trustworthy?

    Args:
      la: a fitted [`Laplace`][laplace_tf.Laplace] (``self`` when called as a method).
      data: ``(x, y)`` or a ``tf.data.Dataset``: the training data, or a subset of it (its
        log-likelihood is scaled to the ``n_data`` examples of the fit), streamed in batches.
      num_draws: draws from the Gaussian (at least 100; 1000 is typical).
      seed: makes the draws reproducible.
      batch_size: examples per batch for arrays.
      verbose: a progress bar over the data's batches, if they take longer than a few seconds.

    Returns:
      A [`Diagnosis`][laplace_tf.Diagnosis]; ``print`` it for the verdict in words.
    """
    la._require_fitted()
    if not isinstance(num_draws, int) or num_draws < MIN_DRAWS:
        raise ValueError(
            f"num_draws must be an integer of at least {MIN_DRAWS}, for PSIS to fit the weights' tail "
            f"(1000 is typical); got {num_draws!r}."
        )
    thetas = la.sample(num_draws, seed)
    log_q = la.posterior.log_prob(thetas)
    log_p, n_examples = log_posterior_density(la, thetas, data, batch_size, verbose)
    distance = mode_distance(la, log_posterior_gradient(la, data, batch_size))
    return Diagnosis.from_log_densities(log_p, log_q, distance, n_examples, la.n_data)
