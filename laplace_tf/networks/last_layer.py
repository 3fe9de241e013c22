r"""The GLM predictive of a last-layer Laplace, from the penultimate features in closed form.

When the posterior is over exactly a Dense output layer's kernel $W \in \mathbb{R}^{d
\times K}$ (and bias), the network's output is $f = W^\top \phi + b$ with features
$\phi$ from the rest of the network, and the Jacobian is $J = a^\top \otimes I_K$ with
$a = (\phi, 1)$ (row-major weights, bias last). So no Jacobian is taken through the network:

* diag: $\operatorname{Var}(f_k) = \sum_i a_i^2 \sigma^2_{ik}$, a diagonal ``(K, K)``;
* kron: for the kernel block $(A \otimes G)$ with eigenbases $Q_A, Q_G$ and eigenvalues
  $E_{ij}$, $J \Sigma J^\top = Q_G \operatorname{diag}_j\big(\sum_i (Q_A^\top \phi)_i^2
  / E_{ij}\big) Q_G^\top$, plus the bias block's $Q_G \operatorname{diag}(1/E_{\cdot j}) Q_G^\top$;
* full: with the posterior's covariance factor $S = L^{-\top}$ ($S S^\top = \Sigma$, rows over the
  weights $(i, k)$), row $k$ of $J S$ is $\sum_i a_i S_{(i,k),\cdot}$, and $J \Sigma J^\top =
  (J S)(J S)^\top$: $O(d K P)$ per example where a triangular solve of $J^\top$ takes $O(K P^2)$.
  $S$ costs one solve of $P$ right-hand sides, so it is formed (and kept) once a call predicts at
  least $P / K$ examples; fewer take the triangular solve;
* lowrank: $J$ is formed from $a$ directly (no backward pass).

The features come from `curvature.output_layer.OutputFeatures`, the compiled function the fit
shares. This needs the model's outputs to be the layer's pre-activation outputs: a model with an
activation on that layer, or a layer after it, takes the other exact paths (`OutputFeatures.direct`).

Each costs $O(d^2 + dK + K^2)$ per example for diag and kron, so thousands of classes are fine.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    >>> la.fit((x, y)).predict(x_test)        # uses the features, not per-example Jacobians
    ```
"""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.posterior.diag import DiagPosterior
from laplace_tf.networks.posterior.full import FullPosterior
from laplace_tf.networks.posterior.kron import EigenBlock, KronPosterior


def functional_variance(
    posterior: object, features: tf.Tensor, n_outputs: int, examples: int | None = None
) -> tf.Tensor:
    """$J \\Sigma J^\\top$ ``(B, K, K)`` for $J = a^\\top \\otimes I_K$; ``examples``: how many the
    caller predicts in all, of which ``features`` are a batch's (``None``: this batch's)."""
    if isinstance(posterior, DiagPosterior):
        variance = tf.reshape(posterior.variance, [-1, n_outputs])  # rows: features (then the bias)
        return tf.linalg.diag(tf.matmul(tf.square(features), variance))
    if isinstance(posterior, KronPosterior):
        return _kron_variance(posterior, features)
    if isinstance(posterior, FullPosterior) and posterior.uses_covariance_factor(
        (examples or features.shape[0]) * n_outputs
    ):
        return _full_variance(posterior, features, n_outputs)
    jacobians = tf.einsum("bi,kl->bkil", features, tf.eye(n_outputs, dtype=features.dtype))
    return posterior.functional_variance(tf.reshape(jacobians, [tf.shape(features)[0], n_outputs, -1]))


def _kron_variance(posterior: KronPosterior, features: tf.Tensor) -> tf.Tensor:
    kernel, kernel_values = posterior.blocks[0], posterior.eigenvalues[0]
    total = _block_variance(kernel, kernel_values, features[:, : kernel.shape[0]])
    if len(posterior.blocks) == 2:  # the bias block: A = [[1]], feature 1
        bias, bias_values = posterior.blocks[1], posterior.eigenvalues[1]
        total += _block_variance(bias, bias_values, features[:, -1:])
    return total


def _block_variance(block: EigenBlock, eigenvalues: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    rotated = features if block.input_vectors is None else tf.matmul(features, block.input_vectors)
    weights = tf.matmul(tf.square(rotated), 1.0 / eigenvalues)  # (B, K) in the output eigenbasis
    q = block.output_vectors
    return tf.einsum("kj,bj,lj->bkl", q, weights, q)


def _full_variance(posterior: FullPosterior, features: tf.Tensor, n_outputs: int) -> tf.Tensor:
    r"""$(J S)(J S)^\top$ with $S = L^{-\top}$, whose rows run over the weights $(i, k)$: row $k$ of
    $J S$ is $\sum_i a_i S_{(i,k),\cdot}$, one ``(B, d+1) x (d+1, K P)`` product, where the
    Jacobians' triangular solve takes $K$ times the arithmetic (and no structure of $J$)."""
    factor = tf.reshape(posterior.covariance_factor, [features.shape[-1], n_outputs * posterior.n_params])
    rows = tf.reshape(tf.matmul(features, factor), [-1, n_outputs, posterior.n_params])
    return tf.matmul(rows, rows, transpose_b=True)
