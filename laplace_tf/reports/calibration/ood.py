r"""Out-of-distribution detection: how well an uncertainty score separates OOD inputs from test inputs.

With scores $s$ (higher meaning "more likely out of distribution") of $n$ in-distribution
and $m$ OOD inputs, the AUROC is the probability that a random OOD input scores higher than
a random in-distribution one, ties counting one half:

$$
\mathrm{AUROC} = \frac{1}{nm} \sum_{i,j} \left([s^{ood}_j > s^{in}_i]
+ \tfrac12 [s^{ood}_j = s^{in}_i]\right),
$$

computed in $O((n+m)\log(n+m))$ from ranks (the Mann-Whitney U statistic). 0.5 is chance, 1
is perfect separation.

Example:
    ```python
    >>> auroc(np.array([0.1, 0.2]), np.array([0.15, 0.9]))
    0.75
    >>> ood_auroc(probs_test, probs_ood, score="entropy")
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np

from laplace_tf.reports.calibration.classification import checked_probs, entropy

OOD_SCORES = ("confidence", "entropy")


def auroc(scores_in: Any, scores_out: Any) -> float:
    """AUROC of OOD-ness scores: in-distribution ``(n,)`` versus out-of-distribution ``(m,)``."""
    scores_in, scores_out = np.ravel(scores_in).astype(np.float64), np.ravel(scores_out).astype(np.float64)
    if len(scores_in) == 0 or len(scores_out) == 0:
        raise ValueError("auroc needs at least one in-distribution and one out-of-distribution score.")
    if not (np.all(np.isfinite(scores_in)) and np.all(np.isfinite(scores_out))):
        raise ValueError("OOD scores must be finite.")
    ranks = _average_ranks(np.concatenate([scores_in, scores_out]))
    n, m = len(scores_in), len(scores_out)
    u_statistic = ranks[n:].sum() - m * (m + 1) / 2
    return float(u_statistic / (n * m))


def ood_auroc(probs_in: Any, probs_out: Any, score: str = "entropy") -> float:
    """AUROC of telling OOD inputs from test inputs by predictive ``"entropy"`` or (low) ``"confidence"``."""
    if score not in OOD_SCORES:
        raise ValueError(f"score must be one of {OOD_SCORES}, got {score!r}.")
    if score == "entropy":
        return auroc(entropy(probs_in), entropy(probs_out))
    return auroc(-checked_probs(probs_in).max(axis=1), -checked_probs(probs_out).max(axis=1))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    first_of_run = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
    run = np.cumsum(first_of_run) - 1
    starts = np.flatnonzero(first_of_run)
    ends = np.concatenate([starts[1:], [len(values)]])
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[run]
    return ranks
