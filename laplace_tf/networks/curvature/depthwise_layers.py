r"""Probe rules for depthwise, separable and grouped convolutions: channels filtered group by group.

``DepthwiseConv1D`` and ``DepthwiseConv2D`` (channels last, as in MobileNet and EfficientNet)
compute, at output position $t$, for input channel $c$ and multiplier $m$,

$$
z_{t, c m} = \sum_k p_{t k c}\, W_{k c m} + b_{c m},
$$

with $p_{t k c}$ the input patches (offset $k$ of the kernel window, channel $c$). Watching $z$,
as for the K-FAC layers (`curvature.kfac_layers`), gives the gradient
$g_{ntc m}$ of $v_{n\cdot}^\top f_n$ at every position of every example in one backward pass per
column, and example $n$'s gradients in the weights are

$$
\partial_{W_{k c m}} = \sum_t p_{ntkc}\, g_{ntcm}, \qquad \partial_{b_{c m}} = \sum_t g_{ntcm}.
$$

``SeparableConv1D`` and ``SeparableConv2D`` (Xception, Keras's image-classification examples)
follow the depthwise step (without bias) by a pointwise one, $o_t = P^\top z_t + b$; watching $o$
too gives its gradients $h_{nt}$, and $\partial_P = \sum_t z_{nt} h_{nt}^\top$,
$\partial_b = \sum_t h_{nt}$. Either way the exact GGN diagonal (and the Jacobian rows) of these
weights needs no per-example Jacobian of the whole network. A grouped convolution (``Conv1D``,
``Conv2D``, ``Conv3D`` with ``groups > 1``: RegNet, ResNeXt) is the same sum within each group
of input channels, $z_{t, g f} = \sum_{k, c} p_{t k g c} W_{k c, g f} + b_{g f}$; a depthwise
convolution is one with a group per input channel. ``kron`` keeps all of these diagonal.

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

from laplace_tf.networks.curvature.kfac_layers import (
    KernelAndBias,
    Probe,
    by_variable,
    columns_by_example,
    input_patches,
    selected_weights,
)

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_GROUPED = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)  # with groups > 1


@dataclass
class DepthwiseRule(KernelAndBias):
    """The probe rule of one depthwise, separable or grouped convolution: ``kernel`` is the
    depthwise (or grouped) kernel, ``pointwise`` the separable layer's pointwise kernel; each is
    set when selected."""

    layer: keras.layers.Layer
    kernel: Any | None
    bias: Any | None
    pointwise: Any | None = None
    probes: list[Probe] = field(default_factory=list)  # separable: depthwise, pointwise per call

    kind = "depthwise"

    @property
    def kernels(self) -> list:
        return [self.kernel, self.pointwise]

    @property
    def separable(self) -> bool:
        return isinstance(self.layer, _SEPARABLE)

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        """The layer's output, recording its inputs and watching $z$ (and, separable, $o$)."""
        layer = self.layer
        if type(layer) in _GROUPED:
            z = self._watched(tape, inputs, _plus_bias(layer, layer.convolution_op(inputs, layer.kernel)))
        elif self.separable:
            z = self._watched(tape, inputs, _depthwise(layer, inputs, layer.depthwise_kernel))
            pointwise = keras.ops.conv(z, layer.pointwise_kernel, data_format=layer.data_format)
            z = self._watched(tape, z, _plus_bias(layer, pointwise))
        else:
            z = self._watched(tape, inputs, _plus_bias(layer, _depthwise(layer, inputs, layer.kernel)))
        return layer.activation(z) if layer.activation is not None else z

    def _watched(self, tape: tf.GradientTape, inputs: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        tape.watch(z)
        self.probes.append(Probe(inputs=inputs, output=z))
        return z


def depthwise_rules(model: keras.Model, selected_paths: set[str]) -> list[DepthwiseRule]:
    """The rules of the model's depthwise, separable and grouped convolutions (channels last,
    ``valid`` or ``same`` padding) with a selected weight."""
    rules = []
    for layer in model._flatten_layers(include_self=False):
        grouped = type(layer) in _GROUPED and layer.groups > 1
        if not (type(layer) in (*_DEPTHWISE, *_SEPARABLE) or grouped) or layer.data_format != "channels_last":
            continue
        if layer.padding not in ("valid", "same") or (layer.rank == 3 and any(d != 1 for d in layer.dilation_rate)):
            continue
        separable = type(layer) in _SEPARABLE
        depthwise = layer.depthwise_kernel if separable else layer.kernel
        pointwise = layer.pointwise_kernel if separable else None
        chosen = selected_weights(layer, [depthwise, pointwise, layer.bias if layer.use_bias else None], selected_paths)
        if chosen is not None:
            kernel, pointwise, bias = chosen
            rules.append(DepthwiseRule(layer, kernel, bias, pointwise))
    return rules


def depthwise_gradients(
    rule: DepthwiseRule, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType
) -> dict[str, tf.Tensor]:
    """Variable path -> every example's gradient ``(C, examples, size)``, flattened like the variable,
    from each recorded probe's output gradients ``(C, rows, ..., channels)``."""
    steps = 2 if rule.separable else 1
    window, groups, group_inputs, group_outputs = _groups(rule)
    kernel, pointwise, bias = 0.0, 0.0, 0.0
    for call in range(0, len(rule.probes), steps):
        probe, g = rule.probes[call], _by_example(gradients[call], examples, dtype)
        patches = tf.cast(input_patches(rule.layer, probe.inputs), dtype)
        patches = tf.reshape(patches, [examples, -1, window, groups, group_inputs])
        grouped = columns_by_example(g, examples, groups, group_outputs)
        kernel += tf.einsum("ntkgc,xntgf->xnkcgf", patches, grouped)  # flattens as (window, c, g, f)
        if rule.separable:
            z = tf.reshape(tf.cast(rule.probes[call + 1].inputs, dtype), [examples, -1, groups * group_outputs])
            g = _by_example(gradients[call + 1], examples, dtype)
            pointwise += tf.einsum("ntc,xntf->xncf", z, g)
        bias += tf.reduce_sum(g, axis=2)
    return by_variable([(rule.kernel, kernel), (rule.pointwise, pointwise), (rule.bias, bias)], examples)


def _groups(rule: DepthwiseRule) -> tuple[int, int, int, int]:
    """The kernel window's size, the number of channel groups and each group's input and output
    channels. A depthwise kernel ``(window, C, M)`` is ``C`` groups of one input and ``M`` outputs;
    a grouped convolution's ``(window, C / G, F)`` is ``G`` groups of ``C / G`` inputs and ``F / G``
    outputs, its outputs group by group. Either way the kernel flattens as (window, input in the
    group, group, output in the group)."""
    layer = rule.layer
    shape = (layer.depthwise_kernel if rule.separable else layer.kernel).shape
    window = int(np.prod(shape[:-2]))
    if type(layer) in (*_DEPTHWISE, *_SEPARABLE):
        return window, int(shape[-2]), 1, int(shape[-1])
    return window, layer.groups, int(shape[-2]), int(shape[-1]) // layer.groups


def _depthwise(layer: keras.layers.Layer, inputs: tf.Tensor, kernel: Any) -> tf.Tensor:
    return keras.ops.depthwise_conv(
        inputs,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
    )


def _plus_bias(layer: keras.layers.Layer, z: tf.Tensor) -> tf.Tensor:
    return z + layer.bias if layer.use_bias else z


def _by_example(g: tf.Tensor, examples: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``(C, rows, ..., channels)`` as ``(C, examples, positions, channels)``."""
    return columns_by_example(tf.cast(g, dtype), examples, g.shape[-1])
