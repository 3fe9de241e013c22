r"""The GLM predictive of a last-layer Laplace, from the penultimate features in closed form.

When the posterior is over exactly a Dense output layer's kernel $W \in \mathbb{R}^{d
\times K}$ (and bias), the network's output is $f = W^\top \phi + b$ with features
$\phi$ from the rest of the network, and the Jacobian is $J = a^\top \otimes I_K$ with
$a = (\phi, 1)$ (row-major weights, bias last). So no Jacobian is taken through the network:

* diag: $\operatorname{Var}(f_k) = \sum_i a_i^2 \sigma^2_{ik}$, a diagonal ``(K, K)``;
* kron: for the kernel block $(A \otimes G)$ with eigenbases $Q_A, Q_G$ and eigenvalues
  $E_{ij}$, $J \Sigma J^\top = Q_G \operatorname{diag}_j\big(\sum_i (Q_A^\top \phi)_i^2
  / E_{ij}\big) Q_G^\top$, plus the bias block's $Q_G \operatorname{diag}(1/E_{\cdot j}) Q_G^\top$;
* full and lowrank: $J$ is formed from $a$ directly (no backward pass).

This needs the model's outputs to be the layer's pre-activation outputs: a model with an
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

from laplace_tf.curvature import compile_for_batches
from laplace_tf.curvature.kfac_layers import LayerRule
from laplace_tf.curvature.output_layer import outputs_and_features
from laplace_tf.params import ModelParameters
from laplace_tf.posterior.diag import DiagPosterior
from laplace_tf.posterior.kron import EigenBlock, KronPosterior


class OutputFeatures:
    r"""Compiled ``(theta, x) -> (outputs (B, K), a (B, d[+1]))``: the features with a 1 for the bias.

    ``direct`` (known once the first call is traced) says whether the model's outputs are the
    Dense layer's own, up to casts and unit axes, from ``(batch, features)`` inputs, in one call:
    only then is $J = a^\top \otimes I_K$. An activation on the layer, any layer after it (a
    rescaling, a reshape), or a second call (a subclassed model reusing it) makes it ``False``,
    and the features are not computed (the predictive then takes another exact path)."""

    def __init__(self, params: ModelParameters, rule: LayerRule):
        self.params, self.rule = params, rule
        self.direct: bool | None = None
        self._compiled = compile_for_batches(self._outputs_and_features, params.model)

    def __call__(self, theta: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return self._compiled(theta, x)

    def _outputs_and_features(self, theta: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        f, features = outputs_and_features(self.params, self.rule, theta, x)
        self.direct = features is not None
        return f, features if self.direct else tf.zeros([tf.shape(f)[0], 0], f.dtype)


def functional_variance(posterior: object, features: tf.Tensor, n_outputs: int) -> tf.Tensor:
    """$J \\Sigma J^\\top$ ``(B, K, K)`` for $J = a^\\top \\otimes I_K$."""
    if isinstance(posterior, DiagPosterior):
        variance = tf.reshape(posterior.variance, [-1, n_outputs])  # rows: features (then the bias)
        return tf.linalg.diag(tf.matmul(tf.square(features), variance))
    if isinstance(posterior, KronPosterior):
        return _kron_variance(posterior, features)
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
