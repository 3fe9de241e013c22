r"""Low-rank GGN: its top-``k`` eigenpairs from GGN-matrix products, never the ``P x P`` matrix.

The GGN acts on a block of vectors $V \in \mathbb{R}^{P \times m}$ as
$\sum_n J_n^\top \Lambda_n (J_n V)$: a forward-mode product $J_n V$ (one
``tf.autodiff.ForwardAccumulator`` pass per column, vectorised), the output Hessian, and one
backward pass. The randomised eigendecomposition of Halko, Martinsson and Tropp (2011) then needs
``2 + power_iterations`` passes over the data:

1. $Y = \mathrm{GGN}\, \Omega$ for a Gaussian $\Omega$ with ``k + oversampling`` columns
   (then ``power_iterations`` times $Y \leftarrow \mathrm{GGN}\, \mathrm{orth}(Y)$);
2. $Q = \mathrm{orth}(Y)$, $B = Q^\top \mathrm{GGN}\, Q$, $B = W \Lambda W^\top$;
3. the eigenpairs are $(\Lambda, Q W)$, the ``k`` largest kept.

With ``k`` equal to the number of parameters the result is the exact GGN.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="lowrank", rank=20).fit((x, y))
    >>> la.curvature.eigenvalues.shape
    TensorShape([20])
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from laplace_tf.curvature.probed_jacobians import jacobians_function
from laplace_tf.likelihoods import Likelihood
from laplace_tf.params import ModelParameters

OVERSAMPLING = 10
POWER_ITERATIONS = 2


@dataclass
class LowRankCurvature:
    """$U \\operatorname{diag}(\\lambda) U^\\top$ with orthonormal ``eigenvectors`` ``(P, k)``."""

    eigenvalues: tf.Tensor
    eigenvectors: tf.Tensor


def ggn_matmul(params: ModelParameters, likelihood: Likelihood) -> Callable:
    """``(theta, x, y, vectors (P, m)) -> (summed loss, GGN_batch @ vectors)``, uncompiled.

    For models ``pfor`` cannot vectorise (``params.vectorize`` false: recurrent loops, which
    forward mode cannot run either; `vectorizing`) the products come from the batch's
    per-example Jacobians, by layer probes where the layers have them
    (`probed_jacobians.jacobians_function`).
    """
    apply, jacobians_of = params.apply, jacobians_function(params)

    def weighted(f: tf.Tensor, directional: tf.Tensor) -> tf.Tensor:
        return tf.vectorized_map(lambda jv: likelihood.hessian_times(f, jv[:, :, None])[:, :, 0], directional)

    def by_jacobians(theta: tf.Tensor, x: Any, y: tf.Tensor, vectors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        f, jacobians = jacobians_of(theta, x)
        directional = tf.einsum("bkp,pm->mbk", jacobians, vectors)
        products = tf.einsum("bkp,mbk->pm", jacobians, weighted(f, directional))
        return tf.reduce_sum(likelihood.loss(f, y)), products

    def by_autodiff(theta: tf.Tensor, x: Any, y: tf.Tensor, vectors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def jvp(tangent: tf.Tensor) -> tf.Tensor:
            with tf.autodiff.ForwardAccumulator(theta, tangent) as accumulator:
                f = apply(theta, x)
            return accumulator.jvp(f)

        with tf.GradientTape() as tape:
            tape.watch(theta)
            f = apply(theta, x)
        directional = tf.vectorized_map(jvp, tf.transpose(vectors))  # (m, B, K) = J V
        return tf.reduce_sum(likelihood.loss(f, y)), _vjp_columns(tape, f, theta, weighted(f, directional))

    return by_autodiff if params.vectorize else by_jacobians


def _vjp_columns(tape: tf.GradientTape, f: tf.Tensor, theta: tf.Tensor, cotangents: tf.Tensor) -> tf.Tensor:
    """$J^\\top u_i$ for each of ``m`` cotangents ``(m, B, K)``, as columns ``(P, m)``."""
    products = tf.vectorized_map(lambda u: tape.gradient(f, theta, output_gradients=u), tf.stop_gradient(cotangents))
    return tf.transpose(products)


def randomized_eigendecomposition(
    product_over_data: Callable[[tf.Tensor], tf.Tensor],
    n_params: int,
    rank: int,
    dtype: tf.DType,
    seed: tf.Tensor,
) -> LowRankCurvature:
    """The top-``rank`` eigenpairs of the PSD operator ``product_over_data``."""
    width = min(n_params, rank + OVERSAMPLING)
    sketch = product_over_data(tf.random.stateless_normal([n_params, width], seed=seed, dtype=dtype))
    for _ in range(POWER_ITERATIONS):
        sketch = product_over_data(tf.linalg.qr(sketch)[0])
    basis = tf.linalg.qr(sketch)[0]
    projected = tf.matmul(basis, product_over_data(basis), transpose_a=True)
    values, vectors = tf.linalg.eigh(0.5 * (projected + tf.transpose(projected)))
    order = tf.argsort(values, direction="DESCENDING")[:rank]
    return LowRankCurvature(
        tf.maximum(tf.gather(values, order), 0.0), tf.matmul(basis, tf.gather(vectors, order, axis=1))
    )
