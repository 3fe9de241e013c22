r"""Function-space (GP) Laplace: the linearised network as a Gaussian process on a subset of the data.

Linearised at the MAP, $f(\theta, x) \approx f(\theta_*, x) + J(x)(\theta - \theta_*)$, the
network under the prior $\mathcal{N}(\theta_*, \delta^{-1} I)$ is a Gaussian process with kernel
$k(x, x') = J(x) J(x')^\top / \delta$ (Immer et al. 2021, "Improving predictions of Bayesian
neural nets via local linearization"). Conditioned on ``n_subset`` training points $M$ through the
likelihood's output Hessians $\Lambda_m = V_m V_m^\top$, its predictive covariance at $x_*$ is

$$
k_{**} - k_{*M} V \big(I + V^\top K_{MM} V\big)^{-1} V^\top k_{M*}
= J_* \big(\delta I + W W^\top\big)^{-1} J_*^\top, \qquad W = J_M^\top V \in \mathbb{R}^{P \times MC},
$$

by Woodbury: the GP posterior is the weight-space Gaussian whose precision is the prior plus the
subset's GGN, a matrix of rank at most $MC$. Its eigenpairs come exactly from the small
$MC \times MC$ Gram matrix $W^\top W = Q \operatorname{diag}(e) Q^\top$: eigenvalues $e$, orthonormal
eigenvectors $W Q e^{-1/2}$, so the posterior is `posterior.lowrank`'s, and with the whole data
set as the subset it equals the full GGN Laplace. Memory: $P \cdot MC$ numbers, never $P^2$.

The subset is drawn with the Laplace's ``seed``, uniformly or (``balanced_subset=True``,
classification) as equal numbers per class as the data allow. The evidence's log-likelihood is
summed over all the data; its log-determinant is the subset's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.curvature.jacobians import output_jacobians
from laplace_tf.curvature.lowrank import LowRankCurvature
from laplace_tf.inputs import n_examples
from laplace_tf.likelihoods import Likelihood
from laplace_tf.params import ModelParameters


def gp_fit(
    params: ModelParameters, likelihood: Likelihood, n_subset: int, balanced: bool, compile_fn: Callable
) -> Callable:
    """``fit(theta, batches, seed, previous, strategy)`` of the GP structure: two passes, the
    loss and labels of every example, then the Jacobian factors $W$ of the chosen subset."""
    apply, vectorize = params.apply, params.vectorize

    def batch_loss(theta: tf.Tensor, x: Any, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(likelihood.loss(apply(theta, x), y))

    def batch_factors(theta: tf.Tensor, x: Any, y: tf.Tensor) -> tf.Tensor:
        f, jacobians = output_jacobians(apply, theta, x, vectorize)
        roots = likelihood.hessian_sqrt(f)  # (B, K, C)
        return tf.reshape(tf.einsum("bkp,bkc->pbc", jacobians, roots), [tf.shape(jacobians)[-1], -1])

    loss_of, factors_of = compile_fn(batch_loss), compile_fn(batch_factors)

    def fit(theta: tf.Tensor, batches: Callable, seed: tf.Tensor, previous: Any = None, strategy: Any = None) -> tuple:
        loss, labels = tf.zeros([], theta.dtype), []
        for x, y in batches():
            loss += loss_of(theta, x, y)
            labels.append(np.argmax(y.numpy(), axis=1) if y.shape[-1] > 1 else np.zeros(len(y), np.int64))
        if not labels:
            raise ValueError("The dataset yielded no batches; nothing to fit.")
        labels = np.concatenate(labels)
        chosen = choose_subset(labels, n_subset, int(seed.numpy()[0]), balanced)
        pieces, start = [], 0
        for x, y in batches():
            end = start + n_examples(x)
            rows = chosen[(chosen >= start) & (chosen < end)] - start
            if len(rows):
                pick = lambda t, rows=rows: tf.gather(t, rows)  # noqa: E731
                pieces.append(factors_of(theta, tf.nest.map_structure(pick, x), pick(y)))
            start = end
        return loss, exact_eigenpairs(tf.concat(pieces, axis=1)), len(labels)

    return fit


def output_count(model: Any) -> int:
    """The model's number of outputs when its output shape says (for the memory check), else 1."""
    shape = getattr(model, "output_shape", None)
    return shape[-1] if isinstance(shape, tuple) and isinstance(shape[-1], int) else 1


def choose_subset(labels: np.ndarray, n_subset: int, seed: int, balanced: bool) -> np.ndarray:
    """Sorted indices of ``min(n_subset, N)`` examples: uniform, or as even across classes as possible."""
    n = len(labels)
    if n_subset >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if not balanced:
        return np.sort(rng.choice(n, n_subset, replace=False))
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    quota = _balanced_quota(np.array([len(members) for members in by_class]), n_subset)
    return np.sort(np.concatenate([members[:count] for members, count in zip(by_class, quota, strict=True)]))


def _balanced_quota(available: np.ndarray, total: int) -> np.ndarray:
    """How many to take per class: equal shares, a small class's unused share spread over the rest."""
    quota = np.zeros_like(available)
    remaining = total
    open_classes = np.flatnonzero(available > 0)
    while remaining > 0 and len(open_classes):
        share = max(1, remaining // len(open_classes))
        for c in open_classes:
            take = min(share, available[c] - quota[c], remaining)
            quota[c] += take
            remaining -= take
        open_classes = np.flatnonzero(available > quota)
    return quota


def exact_eigenpairs(factors: tf.Tensor) -> LowRankCurvature:
    """The nonzero eigenpairs of $W W^\\top$ from the Gram matrix $W^\\top W$ (``(P, r)`` factors)."""
    gram = tf.matmul(factors, factors, transpose_a=True)
    values, vectors = tf.linalg.eigh(gram)
    tolerance = tf.reduce_max(values) * values.shape[0] * np.finfo(factors.dtype.as_numpy_dtype).eps
    kept = values > tolerance
    values, vectors = tf.boolean_mask(values, kept), tf.boolean_mask(vectors, kept, axis=1)
    return LowRankCurvature(eigenvalues=values, eigenvectors=tf.matmul(factors, vectors) * tf.math.rsqrt(values))
