r"""Probe rules for normalisation layers: an elementwise scale and shift of a normalised input.

``LayerNormalization`` over the last axis, ``BatchNormalization`` at inference and
``GroupNormalization`` (channels last) compute $z = \gamma \odot u + \beta$, with $u$ the
normalised input (it does not depend on $\gamma$ or $\beta$; a group normalisation's $u$ is
normalised over each example's positions and the channels of each group). Watching $z$, as the
K-FAC rules do (`curvature.kfac_layers`), gives the gradient $g_{ntc}$ of $v_{nc}^\top f_n$ at
every position $t$ of every example in one backward pass per column, and example $n$'s gradients
in the weights are

$$
\partial_\gamma = \sum_t g_{ntc} \odot u_{nt}, \qquad \partial_\beta = \sum_t g_{ntc},
$$

so their exact GGN diagonal needs no per-example Jacobian (`curvature.probe_squares`).

Example:
    ```python
    >>> rules = scale_shift_rules(transformer, {v.path for v in transformer.trainable_variables})
    >>> [r.layer.name for r in rules]
    ['norm1', 'norm2']
    ```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from laplace_tf.networks.curvature.kfac_layers import Probe, ProbedLayer
from laplace_tf.vectorizing import input_rank


@dataclass
class ScaleShiftRule(ProbedLayer):
    """The probe rule of one normalisation layer; ``scale``/``shift`` are the selected $\\gamma$/$\\beta$."""

    layer: keras.layers.Layer
    scale: Any | None
    shift: Any | None
    probes: list[Probe] = field(default_factory=list)

    kind = "scale_shift"

    @property
    def covered(self) -> list[str]:
        """The paths of the variables this rule gives diagonals."""
        return [v.path for v in (self.scale, self.shift) if v is not None]

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        """The layer's own output, watched; records $u$ as the probe's inputs."""
        outputs = type(self.layer).call(self.layer, inputs, *args, **kwargs)
        tape.watch(outputs)
        self.probes.append(Probe(inputs=tf.stop_gradient(self._normalised(inputs)), output=outputs))
        return outputs

    def _normalised(self, inputs: tf.Tensor) -> tf.Tensor:
        layer = self.layer
        inputs = tf.cast(inputs, tf.float32) if inputs.dtype in (tf.float16, tf.bfloat16) else inputs
        if isinstance(layer, keras.layers.BatchNormalization):
            mean = tf.cast(layer.moving_mean, inputs.dtype)
            variance = tf.cast(layer.moving_variance, inputs.dtype)
            return (inputs - mean) * tf.math.rsqrt(variance + layer.epsilon)
        if isinstance(layer, keras.layers.GroupNormalization):
            return _group_normalised(inputs, layer.groups, layer.epsilon)
        axis, epsilon = layer.axis, layer.epsilon
        return keras.ops.layer_normalization(inputs, None, None, axis, epsilon, rms_scaling=layer.rms_scaling)


def _group_normalised(inputs: tf.Tensor, groups: int, epsilon: float) -> tf.Tensor:
    """``(B, ..., C)`` normalised over each example's positions and each group's ``C / groups`` channels."""
    shape, rank = tf.shape(inputs), inputs.shape.rank
    grouped = tf.reshape(inputs, tf.concat([shape[:-1], [groups, inputs.shape[-1] // groups]], 0))
    mean, variance = tf.nn.moments(grouped, [*range(1, rank - 1), rank], keepdims=True)
    return tf.reshape((grouped - mean) * tf.math.rsqrt(variance + epsilon), shape)


def scale_shift_rules(model: keras.Model, selected_paths: set[str]) -> list[ScaleShiftRule]:
    """The rules of the model's normalisation layers over the last axis with a selected $\\gamma$ or $\\beta$."""
    rules = []
    for layer in model._flatten_layers(include_self=False):
        if not _normalises_the_last_axis(layer):
            continue
        scale = getattr(layer, "gamma", None)
        shift = getattr(layer, "beta", None)
        scale = scale if scale is not None and scale.path in selected_paths else None
        shift = shift if shift is not None and shift.path in selected_paths else None
        if getattr(layer, "rms_scaling", False):  # Keras's RMS scaling adds no beta (its gradient is 0)
            shift = None
        if scale is not None or shift is not None:
            rules.append(ScaleShiftRule(layer, scale, shift))
    return rules


def _normalises_the_last_axis(layer: keras.layers.Layer) -> bool:
    rank = input_rank(layer)
    if rank is None:
        return False
    if type(layer) is keras.layers.BatchNormalization:
        return layer.axis in (-1, rank - 1) and not getattr(layer, "renorm", False)  # Keras 3.12 has no renorm
    if type(layer) is keras.layers.GroupNormalization:
        return layer.axis in (-1, rank - 1)
    if type(layer) is keras.layers.LayerNormalization:
        axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
        return [a % rank for a in axes] == [rank - 1]
    return False
