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

With ``n_eigenvalues`` the subset only chooses features (`nystrom_fit`): the kernel's top
eigenpairs on the subset span a feature space in which the posterior is fitted to all the data,
in time linear in $N$ (ELLA, Deng et al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.distribution import concatenated_over_replicas, summed_over_replicas
from laplace_tf.networks.curvature.jacobians import output_jacobians
from laplace_tf.networks.curvature.lowrank import LowRankCurvature
from laplace_tf.networks.inputs import n_examples
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters


def gp_fit(
    params: ModelParameters,
    likelihood: Likelihood,
    n_subset: int,
    balanced: bool,
    compile_fn: Callable,
    independent_outputs: bool = False,
) -> Callable:
    r"""``fit(theta, batches, seed, previous, strategy)`` of the GP structure: two passes, the
    loss and labels of every example, then the Jacobian factors $W$ of the chosen subset.

    With ``independent_outputs`` each output ``k`` gets its own GP, kernel $J_k J_k^\top / \delta$
    and the output Hessian's diagonal $\Lambda_{kk}$ (cross-output terms dropped): the curvature
    is a list of ``K`` low-rank curvatures of rank at most ``M`` each.
    """
    apply, vectorize = params.apply, params.vectorize

    def batch_factors(theta: tf.Tensor, x: Any, y: tf.Tensor) -> tf.Tensor:
        """Each example's rows of $W^\\top$, examples first: ``(B, C, P)``."""
        f, jacobians = output_jacobians(apply, theta, x, vectorize)
        if independent_outputs:  # one row per output, scaled by the diagonal of Lambda
            roots = tf.sqrt(tf.maximum(tf.linalg.diag_part(likelihood.output_hessian(f)), 0.0))
            return jacobians * roots[:, :, None]
        return tf.einsum("bkp,bkc->bcp", jacobians, likelihood.hessian_sqrt(f))

    loss_of, factors_of = compile_fn(summed_loss(params, likelihood)), compile_fn(batch_factors)

    def fit(theta: tf.Tensor, batches: Callable, seed: tf.Tensor, previous: Any = None, strategy: Any = None) -> tuple:
        summed, rows = distributed(strategy, loss_of), distributed(strategy, factors_of, concatenate=True)
        loss, chosen, n_data = loss_and_subset(theta, batches, summed, n_subset, seed, balanced)
        factors = tf.concat(on_subset(theta, batches, chosen, rows), axis=0)  # (M, C, P)
        if independent_outputs:
            return loss, [exact_eigenpairs(tf.transpose(factors[:, k])) for k in range(factors.shape[1])], n_data
        return loss, exact_eigenpairs(tf.transpose(tf.reshape(factors, [-1, factors.shape[-1]]))), n_data

    return fit


def distributed(strategy: Any, fn: Callable, concatenate: bool = False) -> Callable:
    """``fn(theta, x, y, ...)`` with each batch split across the strategy's replicas, the results
    summed (or, per example, concatenated); ``fn`` itself without a strategy."""
    if strategy is None:
        return fn
    combine = concatenated_over_replicas if concatenate else summed_over_replicas
    return combine(strategy, fn, sharded=(1, 2))


def summed_loss(params: ModelParameters, likelihood: Likelihood) -> Callable:
    """``(theta, x, y) -> the batch's summed loss``, uncompiled."""
    return lambda theta, x, y: tf.reduce_sum(likelihood.loss(params.apply(theta, x), y))


def loss_and_subset(
    theta: tf.Tensor, batches: Callable, loss_of: Callable, n_subset: int, seed: tf.Tensor, balanced: bool
) -> tuple[tf.Tensor, np.ndarray, int]:
    """One pass: the summed loss of all the data, the chosen subset's indices and the data's size."""
    loss, labels = tf.zeros([], theta.dtype), []
    for x, y in batches():
        loss += loss_of(theta, x, y)
        labels.append(np.argmax(y.numpy(), axis=1) if y.shape[-1] > 1 else np.zeros(len(y), np.int64))
    if not labels:
        raise ValueError("The dataset yielded no batches; nothing to fit.")
    labels = np.concatenate(labels)
    return loss, choose_subset(labels, n_subset, int(seed.numpy()[0]), balanced), len(labels)


def on_subset(theta: tf.Tensor, batches: Callable, chosen: np.ndarray, fn: Callable) -> list[tf.Tensor]:
    """``fn(theta, x, y)`` on the chosen examples of each batch (another pass over the data)."""
    results, start = [], 0
    for x, y in batches():
        end = start + n_examples(x)
        rows = chosen[(chosen >= start) & (chosen < end)] - start
        if len(rows):
            pick = lambda t, rows=rows: tf.gather(t, rows)  # noqa: E731
            results.append(fn(theta, tf.nest.map_structure(pick, x), pick(y)))
        start = end
    return results


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


@dataclass
class NystromCurvature:
    """The GGN of all the data in the span of the Nyström features: ``basis`` ``(P, K)``
    (orthonormal) and ``projected`` $V^\\top G V$ ``(K, K)`` (unit noise, untempered)."""

    basis: tf.Tensor
    projected: tf.Tensor


def nystrom_fit(
    params: ModelParameters,
    likelihood: Likelihood,
    n_subset: int,
    balanced: bool,
    n_eigenvalues: int,
    compile_fn: Callable,
) -> Callable:
    r"""``fit`` of the Nyström (ELLA) variant: three passes.

    The kernel on the subset, $K_{MM} = J_M J_M^\top / \delta$, has top eigenpairs
    $(\lambda_i, u_i)$; the Nyström features $\phi(x) = J(x) V / \sqrt\delta$ with
    $V = J_M^\top U \Lambda^{-1/2}$ (the top right singular vectors of $J_M$, orthonormal) give
    $k(x, x') \approx \phi(x)\phi(x')^\top$. A Gaussian over the feature weights, prior
    $\mathcal{N}(0, I)$, is then fitted to all $N$ examples in batches:
    $S^{-1} = I + V^\top G V / \delta$ with $G = \sum_n J_n^\top \Lambda_n J_n$ (cost linear in
    $N$), and the predictive covariance is $\phi_* S \phi_*^\top$ (Deng et al. 2022).
    """
    apply, vectorize, n_params = params.apply, params.vectorize, params.n_params

    def subset_jacobians(theta: tf.Tensor, x: Any, y: tf.Tensor) -> tf.Tensor:
        return output_jacobians(apply, theta, x, vectorize)[1]  # (B, K, P)

    def projected_ggn(theta: tf.Tensor, x: Any, y: tf.Tensor, basis: tf.Tensor) -> tf.Tensor:
        f, jacobians = output_jacobians(apply, theta, x, vectorize)
        features = tf.einsum("bkp,pm->bkm", jacobians, basis)
        return tf.einsum("bkm,bkn->mn", features, likelihood.hessian_times(f, features))

    loss_of, jacobians_of = compile_fn(summed_loss(params, likelihood)), compile_fn(subset_jacobians)
    projected_of = compile_fn(projected_ggn)

    def fit(theta: tf.Tensor, batches: Callable, seed: tf.Tensor, previous: Any = None, strategy: Any = None) -> tuple:
        summed, rows = distributed(strategy, loss_of), distributed(strategy, jacobians_of, concatenate=True)
        loss, chosen, n_data = loss_and_subset(theta, batches, summed, n_subset, seed, balanced)
        top = exact_eigenpairs(
            tf.transpose(tf.reshape(tf.concat(on_subset(theta, batches, chosen, rows), 0), [-1, n_params]))
        )
        basis = top.eigenvectors[:, -n_eigenvalues:]  # eigh orders ascending: the largest last
        projected_run = distributed(strategy, projected_of)
        projected = tf.add_n([projected_run(theta, x, y, basis) for x, y in batches()])
        return loss, NystromCurvature(basis=basis, projected=projected), n_data

    return fit
