r"""Low-rank GGN: its top-``k`` eigenpairs from GGN-matrix products, never the ``P x P`` matrix.

The GGN acts on a block of vectors $V \in \mathbb{R}^{P \times m}$ as
$\sum_n J_n^\top \Lambda_n (J_n V)$: a forward-mode product $J_n V$ (one
``tf.autodiff.ForwardAccumulator`` pass per column, vectorised), the output Hessian, and one
backward pass per column; or, where each weight serves many multiplies (a convolution's patches,
a sequence's steps) and the batch's Jacobians fit in memory, two matrix products with the
Jacobians (`jacobians_pay`). The randomised eigendecomposition of Halko, Martinsson and Tropp (2011) then needs
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

from laplace_tf.networks.curvature.forward_cost import forward_multiplies
from laplace_tf.networks.curvature.probe_passes import traced_batch_size
from laplace_tf.networks.curvature.probed_jacobians import jacobians_function
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters

OVERSAMPLING = 10
POWER_ITERATIONS = 2
JACOBIAN_BYTES = 2**30  # the most a batch's Jacobians (B, K, P) may take where the passes would serve


@dataclass
class LowRankCurvature:
    """$U \\operatorname{diag}(\\lambda) U^\\top$ with orthonormal ``eigenvectors`` ``(P, k)``."""

    eigenvalues: tf.Tensor
    eigenvectors: tf.Tensor


def ggn_matmul(params: ModelParameters, likelihood: Likelihood, by_jacobians: bool | None = None) -> Callable:
    """``(theta, x, y, vectors (P, m)) -> (summed loss, GGN_batch @ vectors)``, uncompiled.

    The products come from forward- and reverse-mode passes, one of each per vector, or from the
    batch's per-example Jacobians, by layer probes where the layers have them
    (`probed_jacobians.jacobians_function`): ``by_jacobians``, or, if ``None``, whichever
    `jacobians_pay` says costs less. Models ``pfor`` cannot vectorise (``params.vectorize`` false:
    recurrent loops, which forward mode cannot run either; `vectorizing`) always take the Jacobians.
    """
    apply, jacobians_of = params.apply, jacobians_function(params)
    multiplies = forward_multiplies(params.model) if by_jacobians is None and params.vectorize else 0

    def weighted(f: tf.Tensor, directional: tf.Tensor) -> tf.Tensor:
        return tf.vectorized_map(lambda jv: likelihood.hessian_times(f, jv[:, :, None])[:, :, 0], directional)

    def jacobians_pay_here(f: tf.Tensor, width: int) -> bool:
        batch_bytes = traced_batch_size(f) * int(f.shape[-1]) * params.n_params * f.dtype.size
        return batch_bytes <= JACOBIAN_BYTES and jacobians_pay(params.n_params, int(f.shape[-1]), width, multiplies)

    def from_jacobians(theta: tf.Tensor, x: Any, y: tf.Tensor, vectors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        f, jacobians = jacobians_of(theta, x)
        directional = tf.einsum("bkp,pm->mbk", jacobians, vectors)
        return tf.reduce_sum(likelihood.loss(f, y)), tf.einsum("bkp,mbk->pm", jacobians, weighted(f, directional))

    def products(theta: tf.Tensor, x: Any, y: tf.Tensor, vectors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if not params.vectorize or by_jacobians:  # forward mode cannot run a looped model either
            return from_jacobians(theta, x, y, vectors)
        with tf.GradientTape() as tape:
            tape.watch(theta)
            f = apply(theta, x)  # unused, and pruned, where the Jacobians' own pass serves
        if by_jacobians is None and jacobians_pay_here(f, int(vectors.shape[-1])):
            return from_jacobians(theta, x, y, vectors)

        def jvp(tangent: tf.Tensor) -> tf.Tensor:
            with tf.autodiff.ForwardAccumulator(theta, tangent) as accumulator:
                outputs = apply(theta, x)
            return accumulator.jvp(outputs)

        directional = tf.vectorized_map(jvp, tf.transpose(vectors))  # (m, B, K) = J V
        return tf.reduce_sum(likelihood.loss(f, y)), _vjp_columns(tape, f, theta, weighted(f, directional))

    return products


def jacobians_pay(n_params: int, outputs: int, width: int, multiplies: int) -> bool:
    r"""Whether a batch's Jacobians give the GGN's products with ``width`` vectors for less than
    ``width`` forward- and reverse-mode passes. Per example, with $F$ the forward pass's
    ``multiplies`` (`forward_cost`), $K$ outputs and $m$ vectors, the passes cost about $m F$ and
    the Jacobians $0.4\, K F$ (the probes' backward passes) plus $0.25\, m K P$ (the two products
    with them), constants measured on a 2-core CPU from MLPs (where the passes win, 2.5-3 times) and
    convolutional networks (where the Jacobians win, 2.5-12 times)."""
    return multiplies * (width - 0.4 * outputs) > 0.25 * width * outputs * n_params


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
