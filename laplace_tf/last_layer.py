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

Each costs $O(d^2 + dK + K^2)$ per example for diag and kron, so thousands of classes are fine.

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    >>> la.fit((x, y)).predict(x_test)        # uses the features, not per-example Jacobians
    ```
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from laplace_tf.curvature import compile_for_batches
from laplace_tf.curvature.graph_calls import called_once, forward_calls
from laplace_tf.curvature.kfac_layers import LayerRule, find_rules, recording
from laplace_tf.params import ModelParameters
from laplace_tf.posterior.diag import DiagPosterior
from laplace_tf.posterior.kron import EigenBlock, KronPosterior


def dense_output_rule(params: ModelParameters) -> LayerRule | None:
    """The rule of the Dense layer whose kernel (and bias, if any) are exactly the selected weights."""
    if not params.rows_are_examples:
        return None
    calls = forward_calls(params.model)
    rules = [
        r
        for r in find_rules(params.model, set(params.names))
        if r.kind == "dense" and r.per_example and called_once(calls, r.layer)
    ]
    if len(rules) != 1:
        return None
    rule = rules[0]
    covered = [rule.kernel.path] + ([rule.bias.path] if rule.bias is not None else [])
    has_bias = getattr(rule.layer, "bias", None) is not None
    if sorted(covered) != sorted(params.names) or has_bias != (rule.bias is not None):
        return None
    return rule


def features_function(params: ModelParameters, rule: LayerRule) -> Callable:
    """Compiled ``(theta, x) -> (outputs (B, K), a (B, d[+1]))``: the features with a 1 for the bias."""

    def outputs_and_features(theta: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape, recording([rule], tape):
            f = params.apply(theta, x)
        features = tf.cast(rule.probe.inputs, f.dtype)
        if features.shape.rank != 2:
            raise ValueError("The closed-form last-layer predictive needs (batch, features) inputs to the last layer.")
        if rule.bias is not None:
            features = tf.concat([features, tf.ones_like(features[:, :1])], axis=1)
        return f, features

    return compile_for_batches(outputs_and_features, params.model)


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
