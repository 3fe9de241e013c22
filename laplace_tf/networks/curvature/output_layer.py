r"""A Dense output layer whose outputs are the model's: $J = a^\top \otimes I_K$, no backward pass.

When the selected weights are exactly a Dense layer's kernel $W \in \mathbb{R}^{d \times K}$ (and
bias), and the model's outputs are that layer's pre-activation outputs $f = W^\top \phi + b$
(no activation on it, no layer after it), example $n$'s Jacobian is $a_n^\top \otimes I_K$ with
$a_n = (\phi_n, 1)$ (row-major weights, bias last). Every structure's GGN then follows from the
features and the output Hessians $\Lambda_n$ alone:

$$
\text{full: } \sum_n (a_n a_n^\top) \otimes \Lambda_n, \qquad
\text{diag: } \sum_n a_{ni}^2 \Lambda_{n,kk} \text{ at weight } (i, k), \qquad
\text{kron: } A = \frac{1}{N} \sum_n \phi_n \phi_n^\top, \; G = \sum_n \Lambda_n
$$

(kron's pre-activation gradients are the columns of $\Lambda_n$'s square root themselves). The
full GGN is one product of ``(B, d K^2)`` and ``(B, d)`` matrices per batch, where
``J^T (Lambda J)`` over ``(B K, d K)`` Jacobians takes ``K`` times the arithmetic (a 512-feature,
10-class head: 13 GFLOP a batch of 256 instead of 135). Whether the outputs are the layer's own is
read from the traced graph (`unchanged_from`).

The features come from one compiled function per model and selection (`shared_output_features`),
which the fit and the last-layer GLM predictive (`last_layer`) share: a last-layer script traces
the network once.

Example:
    ```python
    >>> features = shared_output_features(params)          # None: not a Dense output layer
    >>> f, a = features(theta, x)                          # features.direct: J = a^T (x) I_K
    >>> diagonal = ggn_diagonal(likelihood, f, a)
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from laplace_tf.compiled import cached, separate_tf_function
from laplace_tf.networks.curvature.compiling import compile_for_batches
from laplace_tf.networks.curvature.graph_calls import called_once, forward_calls
from laplace_tf.networks.curvature.kfac_layers import LayerRule, find_rules, recording
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters

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


class OutputFeatures:
    r"""Compiled ``(theta, x) -> (outputs (B, K), a (B, d[+1]))``: the features with a 1 for the bias.

    ``direct`` (known once the first call is traced) says whether the model's outputs are the
    Dense layer's own, up to casts and unit axes, from ``(batch, features)`` inputs, in one call:
    only then is $J = a^\top \otimes I_K$. An activation on the layer, any layer after it (a
    rescaling, a reshape), or a second call (a subclassed model reusing it) makes it ``False``,
    and the features are not computed (the fit and the predictive then take their other paths)."""

    def __init__(self, params: ModelParameters, rule: LayerRule):
        self.params, self.rule = params, rule
        self.direct: bool | None = None
        self._compiled = compile_for_batches(self._outputs_and_features, params.model)

    def __call__(self, theta: tf.Tensor, x: Any) -> tuple[tf.Tensor, tf.Tensor]:
        return self._compiled(theta, x)

    def _outputs_and_features(self, theta: tf.Tensor, x: Any) -> tuple[tf.Tensor, tf.Tensor]:
        f, features = outputs_and_features(self.params, self.rule, theta, x)
        self.direct = features is not None
        return f, features if self.direct else tf.zeros([tf.shape(f)[0], 0], f.dtype)


def shared_output_features(params: ModelParameters) -> OutputFeatures | None:
    """The model's `OutputFeatures` for this selection (one per model, shared by the fits and the
    predictives of every `Laplace` on it), or ``None`` if the selected weights are not exactly a
    Dense layer's that the model calls once."""
    rule = dense_output_rule(params)
    if rule is None:
        return None
    return cached(params.model, ("features", params.cache_key()), lambda: OutputFeatures(params, rule))


def ggn(likelihood: Likelihood, f: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    r"""The batch's full GGN ``(P, P)``, $\sum_n (a_n a_n^\top) \otimes \Lambda_n$."""
    size = features.shape[-1] * f.shape[-1]
    product = tf.einsum("ni,nkl,nj->ikjl", features, likelihood.output_hessian(f), features)
    return tf.reshape(product, [size, size])


def ggn_diagonal(likelihood: Likelihood, f: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    r"""The batch's GGN diagonal ``(P,)``: $\sum_n a_{ni}^2 \Lambda_{n,kk}$ at weight $(i, k)$, one
    ``(d+1, B) x (B, K)`` product."""
    diagonal = tf.matmul(tf.square(features), likelihood.output_hessian_diagonal(f), transpose_a=True)
    return tf.reshape(diagonal, [-1])


def kronecker_sums(likelihood: Likelihood, f: tf.Tensor, features: tf.Tensor, input_dim: int) -> dict:
    r"""The batch's K-FAC sums in `kron.KronPlan`'s layout: $\sum_n \phi_n \phi_n^\top$ over the
    first ``input_dim`` features (not the bias's 1), their number, and $G = \sum_n \Lambda_n$."""
    inputs = features[:, :input_dim]
    return {
        "input": [tf.matmul(inputs, inputs, transpose_a=True)],
        "positions": [tf.cast(tf.shape(inputs)[0], f.dtype)],
        "output": [likelihood.output_hessian_sum(f)],
        "diag": tf.zeros([0], f.dtype),
    }


def features_first(
    features: OutputFeatures, likelihood: Likelihood, curvature_of: Callable, otherwise: Callable
) -> Callable:
    """``batch(theta, x, y, seed) -> (summed loss, curvature sums)``: ``curvature_of(likelihood, f, a)``
    from the shared features where the outputs are the layer's own, else ``otherwise`` (the
    structure's compiled batch function). The closed form is compiled too, once per shape of its
    inputs but the batch axis (a dozen ops: eagerly, they would cost more than the network)."""
    compiled: dict[tuple, Callable] = {}

    def loss_and_curvature(f: tf.Tensor, a: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, Any]:
        return tf.reduce_sum(likelihood.loss(f, y)), curvature_of(likelihood, f, a)

    def closed_form(f: tf.Tensor, a: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, Any]:
        specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in (f, a, y)]
        key = tuple((spec.dtype, tuple(spec.shape[1:])) for spec in specs)
        if key not in compiled:
            compiled[key] = separate_tf_function(loss_and_curvature, input_signature=specs)
        return compiled[key](f, a, y)

    def batch(theta: tf.Tensor, x: Any, y: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, Any]:
        if features.direct is not False:
            f, a = features(theta, x)
            if features.direct:
                return closed_form(f, a, y)
        return otherwise(theta, x, y, seed)

    return batch
