r"""A Dense output layer whose outputs are the model's: $J = a^\top \otimes I_K$, no backward pass.

When the selected weights are exactly a Dense layer's kernel $W \in \mathbb{R}^{d \times K}$ (and
bias), and the model's outputs are that layer's pre-activation outputs $f = W^\top \phi + b$
(no activation on it, no layer after it), example $n$'s Jacobian is $a_n^\top \otimes I_K$ with
$a_n = (\phi_n, 1)$ (row-major weights, bias last). The full GGN is then

$$
G = \sum_n (a_n a_n^\top) \otimes \Lambda_n, \qquad
G_{(i,k),(j,l)} = \sum_n a_{ni} \Lambda_{n,kl} a_{nj},
$$

one product of ``(B, d K^2)`` and ``(B, d)`` matrices per batch, where ``J^T (Lambda J)`` over
``(B K, d K)`` Jacobians takes ``K`` times the arithmetic (a 512-feature, 10-class head: 13 GFLOP
a batch of 256 instead of 135). Whether the outputs are the layer's own is read from the traced
graph (`unchanged_from`); the last-layer GLM predictive (`last_layer`) uses the same features.

Example:
    ```python
    >>> rule = dense_output_rule(params)                      # None: not a Dense output layer
    >>> loss, ggn = output_layer_ggn(params, likelihood, rule, theta, x, y)   # None if not direct
    ```
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from laplace_tf.curvature.graph_calls import called_once, forward_calls
from laplace_tf.curvature.kfac_layers import LayerRule, find_rules, recording
from laplace_tf.likelihoods import Likelihood
from laplace_tf.params import ModelParameters

_PER_EXAMPLE_UNCHANGED = ("Identity", "Cast", "ExpandDims", "Squeeze")  # input 0 is the tensor, values unmoved


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


def outputs_and_features(
    params: ModelParameters, rule: LayerRule, theta: tf.Tensor, x: Any
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The model's outputs ``f`` on ``x``, and the layer's `output_features` if ``f`` is its own."""
    with tf.GradientTape() as tape, recording([rule], tape):
        f = params.apply(theta, x)
    return f, output_features(rule, f)


def output_features(rule: LayerRule, f: tf.Tensor) -> tf.Tensor | None:
    """The features $a$ ``(B, d[+1])`` (a 1 for the bias) of the rule's one recorded call, if the
    traced outputs ``f`` are that call's own pre-activation outputs from ``(batch, d)`` inputs;
    else ``None``."""
    if len(rule.probes) != 1:
        return None
    probe = rule.probes[0]
    if probe.inputs.shape.rank != 2 or not unchanged_from(f, probe.output):
        return None
    features = tf.cast(probe.inputs, f.dtype)
    if rule.bias is not None:
        features = tf.concat([features, tf.ones_like(features[:, :1])], axis=1)
    return features


def unchanged_from(outputs: tf.Tensor, z: tf.Tensor) -> bool:
    """Whether the traced ``outputs`` are ``z`` itself, through casts and unit axes only (ops that
    cannot mix examples or outputs)."""
    tensor = outputs
    while not (tensor.op is z.op and tensor.value_index == z.value_index):
        if tensor.op.type not in _PER_EXAMPLE_UNCHANGED or not tensor.op.inputs:
            return False
        tensor = tensor.op.inputs[0]
    return True


def output_layer_ggn(
    params: ModelParameters, likelihood: Likelihood, rule: LayerRule, theta: tf.Tensor, x: Any, y: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor] | None:
    """The summed loss and the full GGN ``(P, P)`` of the batch from the output layer's features,
    or ``None`` (decided while tracing) if the outputs are not the layer's own."""
    f, features = outputs_and_features(params, rule, theta, x)
    if features is None:
        return None
    hessians = likelihood.output_hessian(f)  # (B, K, K)
    size = features.shape[-1] * f.shape[-1]
    ggn = tf.reshape(tf.einsum("ni,nkl,nj->ikjl", features, hessians, features), [size, size])
    return tf.reduce_sum(likelihood.loss(f, y)), ggn
