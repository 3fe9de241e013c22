r"""Probe rules for depthwise convolutions: each input channel filtered on its own.

``DepthwiseConv1D`` and ``DepthwiseConv2D`` (channels last, as in MobileNet and EfficientNet)
compute, at output position $t$, for input channel $c$ and multiplier $m$,

$$
z_{t, c m} = \sum_k p_{t k c}\, W_{k c m} + b_{c m},
$$

with $p_{t k c}$ the input patches (offset $k$ of the kernel window, channel $c$). A watched zero
perturbation on $z$, as for the K-FAC layers (`curvature.kfac_layers`), gives the gradient
$g_{ntc m}$ of $v_{n\cdot}^\top f_n$ at every position of every example in one backward pass per
column, and example $n$'s gradients in the weights are

$$
\partial_{W_{k c m}} = \sum_t p_{ntkc}\, g_{ntcm}, \qquad \partial_{b_{c m}} = \sum_t g_{ntcm},
$$

so their exact GGN diagonal (and their Jacobian rows) need no per-example Jacobian of the whole
network. ``kron`` keeps these weights diagonal (a depthwise kernel has no single $A \otimes G$).

Example:
    ```python
    >>> rules = depthwise_rules(mobilenet, {v.path for v in mobilenet.trainable_variables})
    >>> rules[0].layer.name
    'expanded_conv_depthwise'
    ```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.curvature.kfac_layers import KernelAndBias, Probe, input_patches

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


@dataclass
class DepthwiseRule(KernelAndBias):
    """The probe rule of one depthwise convolution; ``bias`` is set when it is selected."""

    layer: keras.layers.Layer
    kernel: Any
    bias: Any | None
    probes: list[Probe] = field(default_factory=list)

    kind = "depthwise"

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        """The layer's output, recording its inputs and adding a watched zero perturbation to $z$."""
        layer = self.layer
        z = keras.ops.depthwise_conv(
            inputs,
            layer.kernel,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
        if layer.use_bias:
            z = z + layer.bias
        perturbation = tf.zeros_like(z)
        tape.watch(perturbation)
        self.probes.append(Probe(inputs=inputs, perturbation=perturbation))
        z = z + perturbation
        return layer.activation(z) if layer.activation is not None else z


def depthwise_rules(model: keras.Model, selected_paths: set[str]) -> list[DepthwiseRule]:
    """The rules of the model's depthwise convolutions (channels last) with a selected kernel."""
    rules = []
    for layer in model._flatten_layers(include_self=False):
        if type(layer) not in _DEPTHWISE or layer.data_format != "channels_last":
            continue
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            continue
        if layer.kernel.path not in selected_paths:
            continue
        bias = layer.bias if layer.use_bias and layer.bias.path in selected_paths else None
        rules.append(DepthwiseRule(layer, layer.kernel, bias))
    return rules


def depthwise_gradients(
    rule: DepthwiseRule, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType
) -> dict[str, tf.Tensor]:
    """Variable path -> every example's gradient ``(C, examples, size)``, flattened like the variable,
    from each recorded call's output gradients ``(C, rows, ..., channels * multiplier)``."""
    window, channels, multiplier = int(np.prod(rule.kernel.shape[:-2])), *rule.kernel.shape[-2:]
    kernel, bias = 0.0, 0.0
    for probe, g in zip(rule.probes, gradients, strict=True):
        patches = tf.reshape(tf.cast(input_patches(rule.layer, probe.inputs), dtype), [examples, -1, window, channels])
        g = tf.reshape(tf.cast(g, dtype), [tf.shape(g)[0], examples, -1, channels, multiplier])
        kernel += tf.einsum("ntkc,xntcm->xnkcm", patches, g)
        bias += tf.reduce_sum(g, axis=2)
    pieces = {rule.kernel.path: tf.reshape(kernel, [tf.shape(kernel)[0], examples, -1])}
    if rule.bias is not None:
        pieces[rule.bias.path] = tf.reshape(bias, [tf.shape(bias)[0], examples, -1])
    return pieces
