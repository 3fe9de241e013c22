r"""Per-layer rules of Kronecker-factored curvature: inputs and pre-activation gradients.

For a layer whose pre-activation output is linear in its weight, $z = a^\top W (+ b)$, the
curvature block of $W$ factorises over examples as $A \otimes G$ (K-FAC), with

* $A = \frac{1}{N T} \sum_{n,t} a_{nt} a_{nt}^\top$, the input second moment (over
  examples and positions $t$: sequence steps of a Dense layer on ``(B, T, D)`` inputs or
  of an attention projection, the "expand" convention of Eschenhagen et al. 2023 for weights
  shared across positions; patches of a convolution; time steps of a ``TimeDistributed`` layer);
* $G = \sum_{n,t,c} g_{ntc} g_{ntc}^\top$ with $g_{ntc} = \partial (v_{nc}^\top
  f_n) / \partial z_{nt}$ for the columns $v_{nc}$ of a square root of the output Hessian
  $\Lambda_n = V_n V_n^\top$.

The bias block is $G$ itself. Each rule re-runs its layer's forward pass with the tape watching
$z$; the gradient at $z$ of $\sum_n v_{nc}^\top f_n$ is every example's $g_{nc}$ at once, so $G$
costs one backward pass of the batch per column $c$.

Supported, also inside nested models and wrappers (``TimeDistributed``, ``Bidirectional``,
``MultiHeadAttention``'s projections):

* ``keras.layers.Dense`` (inputs of any rank);
* ``keras.layers.EinsumDense`` whose kernel axes are the contracted input axes (in input order)
  then output axes (in output order), with the input's other axes leading in input and output, as
  in ``MultiHeadAttention`` (``"abc,cde->abde"``, ``"abcd,cde->abe"``): $a$ is the input
  over the contracted axes, $z$ the output over the kernel's output axes, the leading axes
  are positions; its bias gets $G$ when it spans all output axes;
* ``keras.layers.Conv1D``, ``Conv2D`` and ``Conv3D`` (``channels_last``, ``groups=1``, padding
  ``valid`` or ``same``, and ``causal`` for Conv1D; Conv3D without dilation): $a$ are the input
  patches (of the left-padded inputs, for a causal convolution);
* ``keras.layers.Embedding``, whose $A$ is diagonal (the token counts).

Recurrent layers' kernels get Kronecker blocks of their own (`curvature.recurrent_layers`). Other
layers with weights (normalisation, depthwise convolutions, ...) get an exact diagonal block
(`curvature.norm_layers`, `curvature.depthwise_layers`, or per-example Jacobians).
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
    """What one call of a rule's layer recorded: its inputs and its output $z$ (pre-activation),
    watched by the tape, at which the backward passes take their gradients."""

    inputs: tf.Tensor | None = None
    output: tf.Tensor | None = None


class ProbedLayer:
    """What every probe rule shares (`LayerRule`, `norm_layers.ScaleShiftRule`,
    `depthwise_layers.DepthwiseRule`): the probes its layer's calls recorded."""

    probes: list[Probe]

    @property
    def outputs(self) -> list[tf.Tensor]:
        return [probe.output for probe in self.probes]


class KernelAndBias(ProbedLayer):
    """A probe rule for a layer's kernel(s) and, when it gets a block, its bias; a weight the
    selection leaves out is ``None``."""

    kernel: Any
    bias: Any | None

    @property
    def kernels(self) -> list:
        """The kernels: a separable convolution's and a recurrent layer's rules have two."""
        return [self.kernel]

    @property
    def covered(self) -> list[str]:
        """The paths of the variables this rule gives blocks: the kernels, and the bias with a block."""
        return [v.path for v in (*self.kernels, self.bias) if v is not None]

    @property
    def kernel_size(self) -> int:
        """How many numbers one example's gradients in the kernels hold."""
        return sum(int(np.prod(v.shape)) for v in self.kernels if v is not None)


@dataclass
class LayerRule(KernelAndBias):
    """The K-FAC rule for one supported layer."""

    layer: keras.layers.Layer
    kind: str
    kernel: Any
    bias: Any | None  # the bias variable when it gets a curvature block (it is in the subset)
    input_axes: int = 1  # how many leading kernel axes $A$ runs over (the rest are $G$'s)
    per_example: bool = True  # False inside TimeDistributed: the layer sees (B * T, ...) inputs
    probes: list[Probe] = field(default_factory=list)  # one per call in the recorded forward pass

    @property
    def probe(self) -> Probe:
        """The one call's probe, for the predictive paths that need one call per layer."""
        if not self.probes:
            raise ValueError(
                f"Layer {self.layer.name!r} is not called in the model's forward pass, so its weights do not "
                "change the outputs; leave them out with subset_of_weights."
            )
        if len(self.probes) != 1:
            raise ValueError(
                f"Layer {self.layer.name!r} is called {len(self.probes)} times in one forward pass (shared "
                "weights); the closed-form predictive paths need one call. Select the weights by mask "
                "(subset_of_weights) or use hessian_structure='diag' or 'full'."
            )
        return self.probes[0]

    @property
    def input_dim(self) -> int:
        """The size of $A$ (the vocabulary size for an Embedding: $A$ is diagonal)."""
        return int(np.prod(self.kernel.shape[: self.input_axes]))

    @property
    def output_dim(self) -> int:
        return int(np.prod(self.kernel.shape[self.input_axes :]))

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        """The layer's output, recording its inputs and its watched pre-activation output (the
        layer's other call arguments, such as ``training``, change nothing here)."""
        layer = self.layer
        if self.kind == "embedding":
            ids = tf.cast(inputs, "int32") if inputs.dtype not in (tf.int32, tf.int64) else inputs
            z = tf.gather(layer.embeddings, ids, axis=0)
        elif self.kind.startswith("conv") and layer.padding == "causal":  # recorded as padded, then "valid"
            inputs = tf.pad(inputs, [[0, 0], [layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0], [0, 0]])
            z = keras.ops.conv(inputs, layer.kernel, list(layer.strides), "valid", dilation_rate=layer.dilation_rate)
        elif self.kind.startswith("conv"):
            z = layer.convolution_op(inputs, layer.kernel)
        elif self.kind == "einsum":
            z = keras.ops.einsum(layer.equation, inputs, layer.kernel)
        else:
            z = keras.ops.matmul(inputs, layer.kernel)
        if getattr(layer, "bias", None) is not None and self.kind != "embedding":
            z = z + layer.bias
        tape.watch(z)
        self.probes.append(Probe(inputs=inputs, output=z))
        activation = getattr(layer, "activation", None)
        return activation(z) if activation is not None else z

    def input_moment(self) -> tuple[tf.Tensor, tf.Tensor]:
        """$\\sum a a^\\top$ over the batch and every call (a vector of counts for an Embedding)
        and the number of positions it summed over: a layer called several times (shared
        weights) counts each call's inputs as more positions, the "expand" convention. A layer
        the model does not call has zero moments."""
        if not self.probes:
            shape = [self.input_dim] if self.kind == "embedding" else [self.input_dim, self.input_dim]
            return tf.zeros(shape, self.dtype), tf.zeros([], self.dtype)
        moments = [self._input_moment(probe.inputs) for probe in self.probes]
        return tf.add_n([m[0] for m in moments]), tf.add_n([m[1] for m in moments])

    def _input_moment(self, inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.kind == "embedding":
            ids = tf.reshape(tf.cast(inputs, tf.int32), [-1])
            counts = tf.math.bincount(ids, minlength=self.input_dim, maxlength=self.input_dim, dtype=self.dtype)
            return counts, tf.cast(tf.size(ids), self.dtype)
        rows = tf.reshape(tf.cast(self.kernel_inputs(inputs), self.dtype), [-1, self.input_dim])
        return tf.matmul(rows, rows, transpose_a=True), tf.cast(tf.shape(rows)[0], self.dtype)

    def reduced_moments(
        self, gradients: list[tf.Tensor], examples: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        r"""The "reduce" convention: $(\sum_n \bar a_n \bar a_n^\top, N, \sum_{n,c} \hat g_{nc}
        \hat g_{nc}^\top)$ with $\bar a_n$ example $n$'s input averaged over its positions (every
        call's) and $\hat g_{nc}$ its pre-activation gradients ``(C, rows, ..., d_out)`` summed over
        them; the rows of inputs and gradients group by example, $N$ = ``examples`` of them."""
        inputs = [
            tf.reshape(tf.cast(self.kernel_inputs(p.inputs), self.dtype), [examples, -1, self.input_dim])
            for p in self.probes
        ]
        mean = tf.reduce_mean(tf.concat(inputs, 1), 1)
        by_example = [columns_by_example(tf.cast(g, self.dtype), examples, self.output_dim) for g in gradients]
        summed = tf.reshape(tf.reduce_sum(tf.concat(by_example, 2), 2), [-1, self.output_dim])
        count = tf.cast(examples, self.dtype)
        return tf.matmul(mean, mean, transpose_a=True), count, tf.matmul(summed, summed, transpose_a=True)

    def kernel_inputs(self, inputs: tf.Tensor) -> tf.Tensor:
        """What the kernel multiplies: a convolution's input patches, any other layer's inputs."""
        return input_patches(self.layer, inputs) if self.kind.startswith("conv") else inputs

    def output_moment(self, gradients: list[tf.Tensor]) -> tf.Tensor:
        """$\\sum g g^\\top$ from each call's pre-activation gradients ``(C, B, ..., d_out)``, in
        the variables' dtype (a mixed-precision layer computes them in float16)."""
        rows = [tf.reshape(tf.cast(g, self.dtype), [-1, self.output_dim]) for g in gradients]
        if not rows:  # a layer the model does not call
            return tf.zeros([self.output_dim, self.output_dim], self.dtype)
        return tf.add_n([tf.matmul(r, r, transpose_a=True) for r in rows])

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self.kernel.dtype)


def selected_weights(owner: keras.layers.Layer, weights: list, selected_paths: set[str]) -> list | None:
    """Each of a layer's (or cell's) weights if the selection holds it, else ``None`` (also for a
    missing one); ``None`` altogether when it holds none, or when LoRA or quantisation changes what
    the layer computes from them."""
    if getattr(owner, "lora_enabled", False) or getattr(owner, "quantization_mode", None):
        return None
    chosen = [w if w is not None and w.path in selected_paths else None for w in weights]
    return chosen if any(w is not None for w in chosen) else None


def by_variable(gradients: list[tuple[Any, Any]], examples: tf.Tensor) -> dict[str, tf.Tensor]:
    """Variable path -> its per-example gradients ``(C, examples, size)``, from ``(variable,
    gradients (C, examples, ...))`` pairs; a variable that is ``None`` (not selected) is left out."""
    return {variable.path: columns_by_example(value, examples) for variable, value in gradients if variable is not None}


def columns_by_example(t: tf.Tensor, examples: tf.Tensor, *trailing: int) -> tf.Tensor:
    """``(C, rows, ...)`` as ``(C, examples, -1, *trailing)``; ``C`` from the static shape where it is
    known (it is, for every run of the probes), which spares the graph a shape lookup per call."""
    columns = t.shape[0] if t.shape[0] is not None else tf.shape(t)[0]
    return tf.reshape(t, [columns, examples, -1, *trailing])


def covered_paths(rules: list) -> set[str]:
    """The paths of the variables the rules (K-FAC or `norm_layers`) give blocks."""
    return {path for rule in rules for path in rule.covered}


def uncovered_size(params: Any, rules: list) -> int:
    """How many of ``params``' numbers no rule covers (they take per-example Jacobians)."""
    covered = covered_paths(rules)
    return sum(size for name, size in zip(params.names, params.sizes, strict=True) if name not in covered)


def find_rules(model: keras.Model, selected_paths: set[str]) -> list[LayerRule]:
    """The K-FAC rules for the model's supported layers whose kernel is among ``selected_paths``."""
    layers = list(model._flatten_layers(include_self=False))
    time_distributed = {id(layer.layer) for layer in layers if isinstance(layer, keras.layers.TimeDistributed)}
    rules = []
    for layer in layers:
        kind = _kind(layer)
        if kind is None:
            continue
        kernel = layer.embeddings if kind == "embedding" else layer.kernel
        if kernel.path not in selected_paths:
            continue
        input_axes = _einsum_input_axes(layer) if kind == "einsum" else len(kernel.shape) - 1
        bias = _bias_with_kron_block(layer, kind, kernel, input_axes)
        rules.append(
            LayerRule(
                layer,
                kind,
                kernel,
                bias if bias is not None and bias.path in selected_paths else None,
                input_axes=input_axes,
                per_example=id(layer) not in time_distributed,
            )
        )
    return rules


@contextlib.contextmanager
def recording(rules: list, tape: tf.GradientTape) -> Iterator[None]:
    """Temporarily routes each rule's layer through `LayerRule.forward`, recording every call anew."""
    for rule in rules:
        rule.probes = []
        object.__setattr__(rule.layer, "call", _make_call(rule, tape))
    try:
        yield
    finally:
        for rule in rules:
            object.__delattr__(rule.layer, "call")


def _make_call(rule: Any, tape: tf.GradientTape) -> Any:
    def call(inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        return rule.forward(tape, inputs, *args, **kwargs)

    return call


_CONVOLUTIONS = {keras.layers.Conv1D: "conv1d", keras.layers.Conv2D: "conv2d", keras.layers.Conv3D: "conv3d"}


def _kind(layer: keras.layers.Layer) -> str | None:
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if type(layer) is keras.layers.Dense:
        return "dense"
    if type(layer) is keras.layers.EinsumDense:
        return "einsum" if _einsum_input_axes(layer) is not None else None
    if type(layer) is keras.layers.Embedding:
        return "embedding"
    conv = _CONVOLUTIONS.get(type(layer))
    if conv is None or layer.data_format != "channels_last" or layer.groups != 1:
        return None
    paddings = ("valid", "same", "causal") if conv == "conv1d" else ("valid", "same")
    if layer.padding not in paddings or (conv == "conv3d" and any(d != 1 for d in layer.dilation_rate)):
        return None
    return conv


def _einsum_input_axes(layer: keras.layers.Layer) -> int | None:
    """For an EinsumDense whose kernel is (contracted axes, output axes) with the input's other axes
    leading in input and output, the number of contracted axes; else ``None``."""
    equation = layer.equation.replace(" ", "")
    if "." in equation or "->" not in equation or equation.count(",") != 1:
        return None
    operands, output = equation.split("->")
    inputs, kernel = operands.split(",")
    contracted = [c for c in inputs if c in kernel and c not in output]
    free = [c for c in inputs if c not in kernel]
    produced = [c for c in kernel if c in output and c not in inputs]
    layout_ok = (
        list(inputs) == free + contracted
        and list(kernel) == contracted + produced
        and list(output) == free + produced
        and len(free) >= 1
    )
    return len(contracted) if layout_ok and contracted else None


def _bias_with_kron_block(layer: keras.layers.Layer, kind: str, kernel: Any, input_axes: int) -> Any | None:
    """The layer's bias if its block is $G$ (it spans every output axis), else ``None``."""
    bias = getattr(layer, "bias", None) if kind != "embedding" else None
    if bias is None:
        return None
    output_shape = tuple(kernel.shape[input_axes:])
    return bias if tuple(bias.shape) == output_shape else None


def input_patches(layer: keras.layers.Layer, inputs: tf.Tensor) -> tf.Tensor:
    """Convolution input patches ``(B, ..., prod(kernel_size) * c_in)``, ordered like the flattened kernel
    (a causal convolution's inputs come padded: `LayerRule.forward` records them so)."""
    padding = "VALID" if layer.padding == "causal" else layer.padding.upper()
    if len(layer.kernel_size) == 3:
        return tf.extract_volume_patches(
            inputs, ksizes=[1, *layer.kernel_size, 1], strides=[1, *layer.strides, 1], padding=padding
        )
    one_dimensional = len(layer.kernel_size) == 1
    if one_dimensional:  # (B, W, C) as an image of height 1
        inputs = inputs[:, None]
    kernel_size, strides, rates = (
        ((1, *v) if one_dimensional else tuple(v)) for v in (layer.kernel_size, layer.strides, layer.dilation_rate)
    )
    patches = tf.image.extract_patches(
        inputs,
        sizes=[1, *kernel_size, 1],
        strides=[1, *strides, 1],
        rates=[1, *rates, 1],
        padding=padding,
    )
    return patches[:, 0] if one_dimensional else patches
