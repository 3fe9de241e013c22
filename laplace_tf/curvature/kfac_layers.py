r"""Per-layer rules of Kronecker-factored curvature: inputs and pre-activation gradients.

For a layer whose pre-activation output is linear in its weight, :math:`z = a^\top W (+ b)`, the
curvature block of :math:`W` factorises over examples as :math:`A \otimes G` (K-FAC), with

* :math:`A = \frac{1}{N T} \sum_{n,t} a_{nt} a_{nt}^\top`, the input second moment (over
  examples and positions :math:`t`: sequence steps of a Dense layer on ``(B, T, D)`` inputs,
  the "expand" convention; image patches of a Conv2D layer);
* :math:`G = \sum_{n,t,c} g_{ntc} g_{ntc}^\top` with :math:`g_{ntc} = \partial (v_{nc}^\top
  f_n) / \partial z_{nt}` for the columns :math:`v_{nc}` of a square root of the output Hessian
  :math:`\Lambda_n = V_n V_n^\top`.

The bias block is :math:`G` itself. Each rule re-runs its layer's forward pass with a zero
perturbation :math:`\varepsilon` added to :math:`z`; the gradient in :math:`\varepsilon` of
:math:`\sum_n v_{nc}^\top f_n` is every example's :math:`g_{nc}` at once, so :math:`G` costs one
backward pass of the batch per column :math:`c`.

Supported: ``keras.layers.Dense`` (inputs of any rank), ``keras.layers.Conv2D``
(``channels_last``, ``groups=1``), ``keras.layers.Embedding`` (whose :math:`A` is diagonal, the
token counts). Other layers with weights get a diagonal block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf


@dataclass
class Probe:
    """What one forward pass recorded for a rule: its inputs and its perturbation."""

    inputs: tf.Tensor | None = None
    perturbation: tf.Tensor | None = None


@dataclass
class LayerRule:
    """The K-FAC rule for one supported layer."""

    layer: keras.layers.Layer
    kind: str
    kernel: Any
    bias: Any | None  # the bias variable when it gets a curvature block (it is in the subset)
    probe: Probe = field(default_factory=Probe)

    @property
    def input_dim(self) -> int:
        """The size of :math:`A` (the vocabulary size for an Embedding: :math:`A` is diagonal)."""
        return int(np.prod(self.kernel.shape[:-1]))

    @property
    def output_dim(self) -> int:
        return int(self.kernel.shape[-1])

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor) -> tf.Tensor:
        """The layer's output, recording its inputs and adding a watched zero perturbation."""
        layer = self.layer
        if self.kind == "embedding":
            ids = tf.cast(inputs, "int32") if inputs.dtype not in (tf.int32, tf.int64) else inputs
            z = tf.gather(layer.embeddings, ids, axis=0)
        elif self.kind == "conv2d":
            z = layer.convolution_op(inputs, layer.kernel)
        else:
            z = keras.ops.matmul(inputs, layer.kernel)
        if getattr(layer, "bias", None) is not None and self.kind != "embedding":
            z = z + layer.bias
        perturbation = tf.zeros_like(z)
        tape.watch(perturbation)
        self.probe = Probe(inputs=inputs, perturbation=perturbation)
        z = z + perturbation
        activation = getattr(layer, "activation", None)
        return activation(z) if activation is not None else z

    def input_moment(self) -> tuple[tf.Tensor, tf.Tensor]:
        """:math:`\\sum a a^\\top` over the batch (a vector of counts for an Embedding) and the
        number of positions it summed over."""
        inputs = self.probe.inputs
        if self.kind == "embedding":
            ids = tf.reshape(tf.cast(inputs, tf.int32), [-1])
            counts = tf.math.bincount(ids, minlength=self.input_dim, maxlength=self.input_dim, dtype=self.dtype)
            return counts, tf.cast(tf.size(ids), self.dtype)
        if self.kind == "conv2d":
            inputs = _patches(self.layer, inputs)
        rows = tf.reshape(tf.cast(inputs, self.dtype), [-1, self.input_dim])
        return tf.matmul(rows, rows, transpose_a=True), tf.cast(tf.shape(rows)[0], self.dtype)

    def output_moment(self, gradients: tf.Tensor) -> tf.Tensor:
        """:math:`\\sum g g^\\top` from pre-activation gradients ``(C, B, ..., d_out)``."""
        rows = tf.reshape(gradients, [-1, self.output_dim])
        return tf.matmul(rows, rows, transpose_a=True)

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self.kernel.dtype)


def find_rules(model: keras.Model, selected_paths: set[str]) -> list[LayerRule]:
    """The K-FAC rules for the model's supported layers whose kernel is among ``selected_paths``."""
    rules = []
    for layer in _layers(model):
        kind = _kind(layer)
        if kind is None:
            continue
        kernel = layer.embeddings if kind == "embedding" else layer.kernel
        bias = getattr(layer, "bias", None) if kind != "embedding" else None
        if kernel.path not in selected_paths:
            continue
        rules.append(LayerRule(layer, kind, kernel, bias if bias is not None and bias.path in selected_paths else None))
    return rules


@contextlib.contextmanager
def recording(rules: list[LayerRule], tape: tf.GradientTape) -> Iterator[None]:
    """Temporarily routes each rule's layer through :meth:`LayerRule.forward`."""
    for rule in rules:
        object.__setattr__(rule.layer, "call", _make_call(rule, tape))
    try:
        yield
    finally:
        for rule in rules:
            object.__delattr__(rule.layer, "call")


def _make_call(rule: LayerRule, tape: tf.GradientTape) -> Any:
    def call(inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        return rule.forward(tape, inputs)

    return call


def _kind(layer: keras.layers.Layer) -> str | None:
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        return "dense"
    if type(layer) is keras.layers.Conv2D and layer.data_format == "channels_last" and layer.groups == 1:
        return "conv2d"
    if type(layer) is keras.layers.Embedding:
        return "embedding"
    return None


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of the model, nested ones included, each once."""
    seen, out, stack = set(), [], list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack.extend(reversed(getattr(layer, "layers", []) or []))
    return out


def _patches(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """Conv2D input patches ``(B, H', W', kh * kw * c_in)``, ordered like the flattened kernel."""
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    dh, dw = layer.dilation_rate
    return tf.image.extract_patches(
        inputs, sizes=[1, kh, kw, 1], strides=[1, sh, sw, 1], rates=[1, dh, dw, 1], padding=layer.padding.upper()
    )
