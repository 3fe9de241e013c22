r"""Probe rules for depthwise and separable convolutions: each input channel filtered on its own.

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
\partial_{W_{k c m}} = \sum_t p_{ntkc}\, g_{ntcm}, \qquad \partial_{b_{c m}} = \sum_t g_{ntcm}.
$$

``SeparableConv1D`` and ``SeparableConv2D`` (Xception, Keras's image-classification examples)
follow the depthwise step (without bias) by a pointwise one, $o_t = P^\top z_t + b$; a second
perturbation on $o$ gives its gradients $h_{nt}$, and $\partial_P = \sum_t z_{nt} h_{nt}^\top$,
$\partial_b = \sum_t h_{nt}$. Either way the exact GGN diagonal (and the Jacobian rows) of these
weights needs no per-example Jacobian of the whole network. ``kron`` keeps them diagonal.

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
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


@dataclass
class DepthwiseRule(KernelAndBias):
    """The probe rule of one depthwise or separable convolution: ``kernel`` is the depthwise
    kernel, ``pointwise`` the separable layer's pointwise kernel; each is set when selected."""

    layer: keras.layers.Layer
    kernel: Any | None
    bias: Any | None
    pointwise: Any | None = None
    probes: list[Probe] = field(default_factory=list)  # separable: depthwise, pointwise per call

    kind = "depthwise"

    @property
    def covered(self) -> list[str]:
        """The paths of the variables this rule gives diagonals."""
        return [v.path for v in (self.kernel, self.pointwise, self.bias) if v is not None]

    @property
    def kernel_size(self) -> int:
        """How many numbers one example's gradients in the two kernels hold."""
        return sum(int(np.prod(v.shape)) for v in (self.kernel, self.pointwise) if v is not None)

    @property
    def separable(self) -> bool:
        return isinstance(self.layer, _SEPARABLE)

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        """The layer's output, recording its inputs and adding watched zero perturbations to $z$
        (and, separable, to $o$)."""
        layer = self.layer
        depthwise = layer.depthwise_kernel if self.separable else layer.kernel
        z = keras.ops.depthwise_conv(
            inputs,
            depthwise,
            strides=layer.strides,
            padding=layer.padding,
            data_format=layer.data_format,
            dilation_rate=layer.dilation_rate,
        )
        if self.separable:
            z = self._perturbed(tape, inputs, z)
            z = self._perturbed(
                tape, z, _plus_bias(layer, keras.ops.conv(z, layer.pointwise_kernel, data_format=layer.data_format))
            )
        else:
            z = self._perturbed(tape, inputs, _plus_bias(layer, z))
        return layer.activation(z) if layer.activation is not None else z

    def _perturbed(self, tape: tf.GradientTape, inputs: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        perturbation = tf.zeros_like(z)
        tape.watch(perturbation)
        self.probes.append(Probe(inputs=inputs, perturbation=perturbation))
        return z + perturbation


def depthwise_rules(model: keras.Model, selected_paths: set[str]) -> list[DepthwiseRule]:
    """The rules of the model's depthwise and separable convolutions (channels last) with a
    selected weight."""
    rules = []
    for layer in model._flatten_layers(include_self=False):
        if type(layer) not in (*_DEPTHWISE, *_SEPARABLE) or layer.data_format != "channels_last":
            continue
        if layer.padding not in ("valid", "same"):
            continue
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            continue
        separable = type(layer) in _SEPARABLE
        depthwise = layer.depthwise_kernel if separable else layer.kernel
        pointwise = layer.pointwise_kernel if separable else None
        weights = [depthwise, pointwise, layer.bias if layer.use_bias else None]
        kernel, pointwise, bias = [w if w is not None and w.path in selected_paths else None for w in weights]
        if kernel is not None or pointwise is not None or bias is not None:
            rules.append(DepthwiseRule(layer, kernel, bias, pointwise))
    return rules


def depthwise_gradients(
    rule: DepthwiseRule, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType
) -> dict[str, tf.Tensor]:
    """Variable path -> every example's gradient ``(C, examples, size)``, flattened like the variable,
    from each recorded probe's output gradients ``(C, rows, ..., channels)``."""
    steps = 2 if rule.separable else 1
    depthwise_shape = (rule.layer.depthwise_kernel if rule.separable else rule.layer.kernel).shape
    window, channels, multiplier = int(np.prod(depthwise_shape[:-2])), *depthwise_shape[-2:]
    kernel, pointwise, bias = 0.0, 0.0, 0.0
    for call in range(0, len(rule.probes), steps):
        probe, g = rule.probes[call], _by_example(gradients[call], examples, dtype)
        patches = tf.reshape(tf.cast(input_patches(rule.layer, probe.inputs), dtype), [examples, -1, window, channels])
        g_channels = tf.reshape(g, [tf.shape(g)[0], examples, -1, channels, multiplier])
        kernel += tf.einsum("ntkc,xntcm->xnkcm", patches, g_channels)
        if rule.separable:
            z = tf.reshape(tf.cast(rule.probes[call + 1].inputs, dtype), [examples, -1, channels * multiplier])
            g = _by_example(gradients[call + 1], examples, dtype)
            pointwise += tf.einsum("ntc,xntf->xncf", z, g)
        bias += tf.reduce_sum(g, axis=2)
    pieces = {}
    for variable, value in ((rule.kernel, kernel), (rule.pointwise, pointwise), (rule.bias, bias)):
        if variable is not None:
            pieces[variable.path] = tf.reshape(value, [tf.shape(value)[0], examples, -1])
    return pieces


def _plus_bias(layer: keras.layers.Layer, z: tf.Tensor) -> tf.Tensor:
    return z + layer.bias if layer.use_bias else z


def _by_example(g: tf.Tensor, examples: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``(C, rows, ..., channels)`` as ``(C, examples, positions, channels)``."""
    return tf.reshape(tf.cast(g, dtype), [tf.shape(g)[0], examples, -1, g.shape[-1]])
