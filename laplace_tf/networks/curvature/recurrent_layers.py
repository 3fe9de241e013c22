r"""Probe rules for recurrent layers (LSTM, GRU, SimpleRNN): gradients at every time step's gates.

A recurrent cell's gate pre-activations at step $t$ are linear in its weights,

$$
z_t = x_t W + h_{t-1} U + b,
$$

(a GRU's candidate gate takes $r_t \odot (h_{t-1} U_h)$, or $(r_t \odot h_{t-1}) U_h$ with
``reset_after=False``, and ``reset_after`` gives the recurrent product a bias of its own). The rule
re-runs the layer's loop (Keras's own, with its masking, ``go_backwards`` and ``unroll``) with the
input projection $x_t W + b$ computed for all steps at once and watched by the tape; the loop
also records $h_{t-1}$ (and a GRU's $r_t$). One backward pass of the batch per column $v_{nc}$
then gives $g_{ntc} = \partial (v_{nc}^\top f_n) / \partial z_{nt}$ at every step of
every example, and example $n$'s gradients in the weights are

$$
\partial_W = \sum_t x_{nt} g_{ntc}^\top, \qquad
\partial_U = \sum_t h_{n,t-1} g_{ntc}^\top, \qquad
\partial_b = \sum_t g_{ntc},
$$

so the exact GGN diagonal (``diag``) and the Jacobian rows (GLM predictive, ``full``) need no
per-example Jacobians through the loop. For a GRU the recurrent product's gradient is $g$ with its
candidate part scaled by $r_t$ (``reset_after``), or the candidate columns of $U$ take
$r_t \odot h_{t-1}$ as their inputs (``reset_after=False``).

``kron`` treats the weights, shared by every step, like a Dense layer's on sequences (the "expand"
convention of Eschenhagen et al. 2023, `kfac_layers`): with $\bar g$ the gradient at a weight's
own pre-activation ($g$, or a GRU's recurrent product's),

$$
W \approx A_x \otimes G, \quad U \approx A_h \otimes \bar G, \quad
A_x = \frac{1}{S} \sum_{n,t} x_{nt} x_{nt}^\top, \quad A_h = \frac{1}{S} \sum_{n,t} h_{n,t-1}
h_{n,t-1}^\top, \quad G = \sum_{n,t,c} g_{ntc} g_{ntc}^\top,
$$

over the $S$ steps the layer ran (masked steps skip the weights and are left out); the bias gets
$G$ (a ``reset_after`` GRU's two rows: the second moment of $g$ and $\bar g$ stacked). A GRU with
``reset_after=False`` and a selected recurrent kernel keeps diagonal blocks: its candidate columns
of $U$ see $r_t \odot h_{t-1}$, the other columns $h_{t-1}$, so no one $A$ serves $U$.

Dropout is inactive (the model is evaluated with ``training=False``). Stacked or custom cells and
``ConvLSTM`` keep per-example Jacobians (a stateful layer is refused: `validation.check_not_stateful`).

Example:
    ```python
    >>> rules = recurrent_rules(lstm_model, {v.path for v in lstm_model.trainable_variables})
    >>> rules[0].layer.name
    'lstm'
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

try:  # the loop Keras's own RNN.inner_loop runs (not public API)
    from keras.src.backend import rnn as keras_rnn
except ImportError:  # a Keras that moved it: recurrent layers keep per-example Jacobians
    keras_rnn = None

from laplace_tf.networks.curvature.kfac_layers import (
    KernelAndBias,
    Probe,
    by_variable,
    columns_by_example,
    selected_weights,
)

_CELLS = (keras.layers.LSTMCell, keras.layers.GRUCell, keras.layers.SimpleRNNCell)
_LAYERS = (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN, keras.layers.RNN)  # not subclasses


@dataclass
class RecurrentProbe(Probe):
    """One call's inputs $x$ ``(B, T, D)``, watched input projection ``(B, T, gates)``, per step
    in time order $h_{t-1}$ and (a GRU) $r_t$ ``(B, T, H or 2 H)``, and which steps ran ``(B, T)``
    (``None``: all; the others, masked, carry the state over)."""

    recorded: tf.Tensor | None = None
    mask: tf.Tensor | None = None


@dataclass
class RecurrentRule(KernelAndBias):
    """The probe rule of one recurrent layer; each weight is set when selected."""

    layer: keras.layers.RNN
    kernel: Any | None
    bias: Any | None
    recurrent: Any | None = None
    probes: list[Probe] = field(default_factory=list)

    kind = "recurrent"

    @property
    def kernels(self) -> list:
        return [self.kernel, self.recurrent]

    @property
    def cell(self) -> keras.layers.Layer:
        return self.layer.cell

    @property
    def factored(self) -> bool:
        """Whether ``kron`` gives the selected weights Kronecker blocks: all but a ``reset_after=False``
        GRU's recurrent kernel, whose columns do not share one input."""
        cell = self.cell
        return not (isinstance(cell, keras.layers.GRUCell) and not cell.reset_after and self.recurrent is not None)

    def factor_shapes(self) -> list[tuple[int, int]]:
        """The sizes of $A$ and $G$ of each covered variable (kernel, recurrent kernel, bias)."""
        shapes = [(int(v.shape[0]), int(v.shape[1])) for v in self.kernels if v is not None]
        return shapes + ([(1, int(np.prod(self.bias.shape)))] if self.bias is not None else [])

    def kronecker_sums(
        self, gradients: list[tf.Tensor], dtype: tf.DType, reduce: bool = False
    ) -> list[list[tf.Tensor]]:
        """Per covered variable (kernel, recurrent kernel, bias), ``[sum a a^T, count, sum g g^T]``
        from the calls' gate gradients ``(C, rows, T, gates)``: over every step that ran (``count``
        steps), or with ``reduce`` over examples (``count`` of them), each with its inputs averaged
        over its steps (every call's) and its gradients summed. $A$ is the first over the second
        (a bias's $a$ is 1)."""
        shapes = self.factor_shapes()
        if not self.probes:  # a layer the model does not call
            return [[tf.zeros([a, a], dtype), tf.zeros([], dtype), tf.zeros([g, g], dtype)] for a, g in shapes]
        pieces = [
            _step_pieces(self.cell, p, tf.cast(g, dtype), dtype) for p, g in zip(self.probes, gradients, strict=True)
        ]
        if reduce:
            axes = (1, 1, 1, 2, 2)  # the steps' axis of inputs, states, steps that ran, gradients
            inputs, previous, ran, gates, products = (
                tf.add_n([tf.reduce_sum(piece[i], axis) for piece in pieces]) for i, axis in enumerate(axes)
            )
            inputs, previous = (tf.math.divide_no_nan(t, ran[:, None]) for t in (inputs, previous))
            count = tf.cast(tf.shape(ran)[0], dtype)
            by_call = [(inputs, previous, gates, products)]
        else:
            count = tf.add_n([tf.reduce_sum(piece[2]) for piece in pieces])
            by_call = [(x, h, g, product) for x, h, _, g, product in pieces]
        stacked = isinstance(self.cell, keras.layers.GRUCell) and self.cell.reset_after  # its bias's two rows
        moments = [tf.add_n([_second_moment(call[i]) for call in by_call]) for i in range(4)]
        bias = tf.add_n([_second_moment(tf.concat(call[2:], -1)) for call in by_call]) if stacked else moments[2]
        by_variable = [
            (self.kernel, moments[0], moments[2]),
            (self.recurrent, moments[1], moments[3]),
            (self.bias, tf.reshape(count, [1, 1]), bias),
        ]
        return [[a, count, g] for variable, a, g in by_variable if variable is not None]

    def forward(self, tape: tf.GradientTape, inputs: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
        """The layer's own ``call`` (initial states, masks, returned states), its loop replaced by
        `_probed_loop` for this call."""
        layer = self.layer
        object.__setattr__(layer, "inner_loop", lambda *a, **k: self._probed_loop(tape, *a, **k))
        try:
            return type(layer).call(layer, inputs, *args, **kwargs)
        finally:
            object.__delattr__(layer, "inner_loop")

    def _probed_loop(
        self, tape: tf.GradientTape, sequences: tf.Tensor, initial_state: list, mask: Any, training: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor, list]:
        """``RNN.inner_loop``'s results, from a loop whose inputs are the watched projections
        $x_t W + b$ and whose outputs carry the recorded $h_{t-1}$ (and $r_t$)."""
        layer, cell = self.layer, self.cell
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        projected = keras.ops.matmul(sequences, cell.kernel)
        if cell.use_bias:
            projected = projected + _input_bias(cell)
        tape.watch(projected)
        units = cell.units
        step = _step_function(cell)
        last, outputs, states = keras_rnn(
            step,
            projected,
            list(initial_state),
            go_backwards=layer.go_backwards,
            mask=mask,
            unroll=layer.unroll,
            input_length=sequences.shape[1],
            zero_output_for_mask=layer.zero_output_for_mask,
            return_all_outputs=True,
        )
        recorded = outputs[:, :, units:]
        if layer.go_backwards:  # the loop ran, and stacked its outputs, from the last step
            recorded = tf.reverse(recorded, [1])
        self.probes.append(RecurrentProbe(inputs=sequences, output=projected, recorded=recorded, mask=mask))
        return last[:, :units], outputs[:, :, :units], states


def recurrent_rules(model: keras.Model, selected_paths: set[str]) -> list[RecurrentRule]:
    """The rules of the model's LSTM, GRU and SimpleRNN layers (also inside ``Bidirectional``, and
    ``keras.layers.RNN`` around one such cell) with a selected weight."""
    rules = []
    layers = model._flatten_layers(include_self=False) if keras_rnn is not None else []
    for layer in layers:
        if type(layer) not in _LAYERS or type(getattr(layer, "cell", None)) not in _CELLS:
            continue
        cell = layer.cell
        weights = [cell.kernel, cell.recurrent_kernel, cell.bias if cell.use_bias else None]
        chosen = selected_weights(cell, weights, selected_paths)
        if chosen is not None:
            kernel, recurrent, bias = chosen
            rules.append(RecurrentRule(layer, kernel, bias, recurrent))
    return rules


def recurrent_gradients(
    rule: RecurrentRule, gradients: list[tf.Tensor], examples: tf.Tensor, dtype: tf.DType
) -> dict[str, tf.Tensor]:
    """Variable path -> every example's gradient ``(C, examples, size)``, flattened like the
    variable, from each call's gradients at the projections ``(C, rows, T, gates)``."""
    kernel, recurrent, bias = 0.0, 0.0, 0.0
    for probe, g in zip(rule.probes, gradients, strict=True):
        g = columns_by_example(tf.cast(g, dtype), examples, g.shape[-1])
        inputs = tf.reshape(tf.cast(probe.inputs, dtype), [examples, -1, probe.inputs.shape[-1]])
        recorded = tf.reshape(tf.cast(probe.recorded, dtype), [examples, -1, probe.recorded.shape[-1]])
        kernel += tf.einsum("ntd,xntg->xndg", inputs, g)
        step_recurrent, step_bias = _recurrent_pieces(rule.cell, recorded, g)
        recurrent += step_recurrent
        bias += step_bias
    return by_variable([(rule.kernel, kernel), (rule.recurrent, recurrent), (rule.bias, bias)], examples)


def _step_pieces(cell: keras.layers.Layer, probe: RecurrentProbe, g: tf.Tensor, dtype: tf.DType) -> tuple:
    """One call's inputs $x_t$ and previous states $h_{t-1}$ ``(rows, T, ...)``, zero at the steps
    that did not run, which steps ran ``(rows, T)``, and the gradients ``(C, rows, T, gates)`` at
    $x_t W$ and at the recurrent product (a ``reset_after`` GRU's candidate part scaled by $r_t$)."""
    units, width = cell.units, int(g.shape[-1])
    ran = tf.ones(tf.shape(probe.output)[:2], dtype) if probe.mask is None else tf.cast(probe.mask, dtype)
    recorded = tf.cast(probe.recorded, dtype)
    inputs = tf.cast(probe.inputs, dtype) * ran[..., None]
    previous = recorded[..., :units] * ran[..., None]
    g = tf.reshape(g, tf.concat([[-1], tf.shape(recorded)[:2], [width]], 0))
    product = g
    if isinstance(cell, keras.layers.GRUCell) and cell.reset_after:
        product = tf.concat([g[..., : 2 * units], recorded[..., units:] * g[..., 2 * units :]], -1)
    return inputs, previous, ran, g, product


def _second_moment(t: tf.Tensor) -> tf.Tensor:
    r"""$\sum r r^\top$ over the rows $r$ of ``t`` flattened to its last axis."""
    rows = tf.reshape(t, [-1, t.shape[-1]])
    return tf.matmul(rows, rows, transpose_a=True)


def _recurrent_pieces(cell: keras.layers.Layer, recorded: tf.Tensor, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per column and example, the gradient in the recurrent kernel ``(C, n, H, gates)`` and in
    the bias (a GRU's ``reset_after`` bias: input then recurrent rows) from one call's recorded
    steps ``(n, T, H or 2 H)`` and gate gradients ``g`` ``(C, n, T, gates)``."""
    bias = tf.reduce_sum(g, 2)
    if not isinstance(cell, keras.layers.GRUCell):
        return tf.einsum("nth,xntg->xnhg", recorded, g), bias
    units = cell.units
    previous, second = recorded[..., :units], recorded[..., units:]
    update_reset, candidate = g[..., : 2 * units], g[..., 2 * units :]
    if cell.reset_after:  # the candidate's recurrent product is scaled by r_t after the product
        inner = tf.concat([update_reset, second * candidate], -1)
        return tf.einsum("nth,xntg->xnhg", previous, inner), tf.stack([bias, tf.reduce_sum(inner, 2)], 2)
    by_previous = tf.einsum("nth,xntg->xnhg", previous, update_reset)
    by_reset = tf.einsum("nth,xntg->xnhg", second, candidate)  # second is r_t * h_{t-1}
    return tf.concat([by_previous, by_reset], -1), bias


def _input_bias(cell: keras.layers.Layer) -> Any:
    """The bias added to $x_t W$: the whole bias, or the first row of a ``reset_after`` GRU's."""
    return cell.bias[0] if isinstance(cell, keras.layers.GRUCell) and cell.reset_after else cell.bias


def _step_function(cell: keras.layers.Layer) -> Callable:
    """The cell's step on a projected input $x_t W + b$: ``(projected, states) -> (output, states)``,
    the output being $h_t$ followed by the recorded $h_{t-1}$ (and a GRU's second record)."""
    if isinstance(cell, keras.layers.LSTMCell):
        return lambda projected, states: _lstm_step(cell, projected, states)
    if isinstance(cell, keras.layers.GRUCell):
        return lambda projected, states: _gru_step(cell, projected, states)
    return lambda projected, states: _simple_step(cell, projected, states)


def _simple_step(cell: keras.layers.Layer, projected: tf.Tensor, states: Any) -> tuple[tf.Tensor, list]:
    previous = states[0]
    h = projected + keras.ops.matmul(previous, cell.recurrent_kernel)
    h = cell.activation(h) if cell.activation is not None else h
    return tf.concat([h, previous], -1), [h]


def _lstm_step(cell: keras.layers.Layer, projected: tf.Tensor, states: Any) -> tuple[tf.Tensor, list]:
    previous, carry = states[0], states[1]
    z = projected + keras.ops.matmul(previous, cell.recurrent_kernel)
    z_input, z_forget, z_carry, z_output = tf.split(z, 4, axis=-1)
    forget, remember = cell.recurrent_activation(z_forget), cell.recurrent_activation(z_input)
    carry = forget * carry + remember * cell.activation(z_carry)
    h = cell.recurrent_activation(z_output) * cell.activation(carry)
    return tf.concat([h, previous], -1), [h, carry]


def _gru_step(cell: keras.layers.Layer, projected: tf.Tensor, states: Any) -> tuple[tf.Tensor, list]:
    previous = states[0] if isinstance(states, (list, tuple)) else states
    units = cell.units
    x_update, x_reset, x_candidate = tf.split(projected, 3, axis=-1)
    if cell.reset_after:
        inner = keras.ops.matmul(previous, cell.recurrent_kernel)
        if cell.use_bias:
            inner = inner + cell.bias[1]
    else:
        inner = keras.ops.matmul(previous, cell.recurrent_kernel[:, : 2 * units])
    update = cell.recurrent_activation(x_update + inner[:, :units])
    reset = cell.recurrent_activation(x_reset + inner[:, units : 2 * units])
    if cell.reset_after:
        candidate, second = x_candidate + reset * inner[:, 2 * units :], reset
    else:
        second = reset * previous
        candidate = x_candidate + keras.ops.matmul(second, cell.recurrent_kernel[:, 2 * units :])
    h = update * previous + (1 - update) * cell.activation(candidate)
    return tf.concat([h, previous, second], -1), [h]
