r"""The exact diagonal GGN (or empirical Fisher) from layer probes, without per-example Jacobians.

Each supported layer (Dense, EinsumDense, convolutions, Embedding: `curvature.kfac_layers`;
LayerNormalization, BatchNormalization and GroupNormalization: `curvature.norm_layers`; depthwise, separable and
grouped convolutions: `curvature.depthwise_layers`; LSTM, GRU and SimpleRNN:
`curvature.recurrent_layers`) is re-run with the gradient tape
watching its output, so one backward pass of the batch per column $v_{nc}$ of a square root
of the output Hessian ($\Lambda_n = V_n V_n^\top$; the loss gradient for the empirical Fisher)
gives every example's gradient at the layer's output. Example $n$'s gradient in the layer's
weights follows from those and the layer's inputs, and the diagonal is the sum of their squares
(`curvature.probe_squares`); for a Dense layer on ``(batch, d_in)`` inputs,

$$
\operatorname{diag}_W = \sum_n (a_n \odot a_n) \Big(\sum_c g_{nc} \odot g_{nc}\Big)^\top, \qquad
\operatorname{diag}_b = \sum_{n, c} g_{nc} \odot g_{nc}.
$$

That is exact and costs ``C`` backward passes of the batch, where a ``(B, K, P)`` Jacobian costs
``K`` backward passes per example and a nested ``pfor`` to trace. Variables of other layers
(custom layers, ConvLSTM) keep the per-example Jacobian diagonal, and so does a layer
whose inputs are not grouped by example (`probe_squares.rows_grouped_by_example`).

Example:
    ```python
    >>> la = lt.Laplace(cnn, "classification", hessian_structure="diag").fit((x, y))   # this path
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks.curvature import diag
from laplace_tf.networks.curvature.depthwise_layers import depthwise_rules
from laplace_tf.networks.curvature.jacobians import loss_gradients, output_jacobians
from laplace_tf.networks.curvature.kfac_layers import find_rules, recording, uncovered_size
from laplace_tf.networks.curvature.norm_layers import scale_shift_rules
from laplace_tf.networks.curvature.probe_passes import ProbeRun, probe_column_count, probe_columns, run_probes
from laplace_tf.networks.curvature.probe_squares import rows_grouped_by_example, squared_gradient_sums
from laplace_tf.networks.curvature.recurrent_layers import recurrent_rules
from laplace_tf.networks.likelihoods import Likelihood
from laplace_tf.networks.params import ModelParameters
from laplace_tf.options import CurvatureType
from laplace_tf.vectorizing import input_rank


class ProbedDiagonal:
    """The diagonal curvature's per-batch computation by probes, where the model allows it."""

    def __init__(self, params: ModelParameters, likelihood: Likelihood, curvature_type: CurvatureType):
        self.params, self.likelihood, self.curvature_type = params, likelihood, curvature_type
        self.rules = probe_rules(params)
        self.jacobian_params = uncovered_size(params, self.rules)  # per-example Jacobians
        self.one_position: dict[int, bool | None] = {}  # by id(rule), learnt by `prepare` (None: unknown)
        self._prepared_for: str | None = None  # the example shapes and dtypes `prepare` learnt it from

    def prepare(self, theta: tf.Tensor, x: Any, outputs_needed: bool) -> tf.Tensor | None:
        """Notes which Dense layers see one row per example (a model may reshape ``(B, T, D)`` to
        ``(B * T, D)``, which the fit's trace, batch size unknown, cannot tell apart), from a
        forward pass on a batch: run eagerly when ``outputs_needed`` (its outputs returned),
        otherwise traced once with the batch's static shapes in a scratch graph (as Keras infers
        output shapes), which runs nothing. ``None`` when no outputs were computed, and without any
        pass when an earlier batch of the same example shapes told."""
        shapes = repr(tf.nest.map_structure(lambda t: (tuple(t.shape[1:]), t.dtype.name), x))
        if shapes == self._prepared_for:
            return None
        if outputs_needed:
            f = self._note_rows(theta, x)
        else:
            with tf.__internal__.FuncGraph("laplace_tf_probe_shapes").as_default():
                self._note_rows(*tf.nest.map_structure(_placeholder, (theta, x)))
            f = None
        self._prepared_for = shapes
        return f

    def _note_rows(self, theta: tf.Tensor, x: Any) -> tf.Tensor:
        """The outputs, noting per rule whether its Dense layer's only call sees one row per example
        (``None``: unknown from static shapes, checked while running)."""
        with tf.GradientTape() as tape, recording(self.rules, tape):
            f = self.params.apply(theta, x)
        examples = f.shape[0]
        for rule in self.rules:
            probe = rule.probes[0] if len(rule.probes) == 1 else None
            matrix = probe is not None and rule.kind == "dense" and probe.inputs.shape.rank == 2
            rows = probe.inputs.shape[0] if matrix else None
            self.one_position[id(rule)] = None if matrix and None in (rows, examples) else rows == examples
        return f

    def batch(self, theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The summed loss and the diagonal ``(P,)`` over one batch."""
        f, pieces = run_probes(
            self.params,
            self.rules,
            theta,
            x,
            lambda f: probe_columns(self.likelihood, self.curvature_type, f, y),
            lambda run: probed_pieces(self.rules, run, self.params.dtype, self.one_position),
            lambda outputs: probe_column_count(self.likelihood, self.curvature_type, outputs),
            weight_numbers=per_example_memory(self.rules, self.params),
        )
        pieces = with_jacobian_pieces(self, self.params.names, pieces, x, y)
        diagonal = tf.concat([pieces[name] for name in self.params.names], axis=0)
        return tf.reduce_sum(self.likelihood.loss(f, y)), diagonal


def _placeholder(t: tf.Tensor) -> tf.Tensor:
    return tf.compat.v1.placeholder(tf.as_dtype(t.dtype), t.shape)


def probed_pieces(
    rules: list, run: ProbeRun, dtype: tf.DType, one_position: dict[int, bool | None] | None = None
) -> dict[str, tf.Tensor]:
    """Variable path -> diagonal over one batch (and the run's columns), for the variables of the
    rules whose inputs are grouped by example. ``one_position`` says, by ``id(rule)``, which Dense
    layers are known to see one row per example (unknown: checked while running)."""
    one_position = one_position or {}
    pieces: dict[str, tf.Tensor] = {}
    for rule, rule_grads in zip(rules, run.gradients, strict=True):
        if rule.probes and rows_grouped_by_example(rule, run.static_examples):  # an unused layer: no probes
            pieces.update(squared_gradient_sums(rule, rule_grads, run.examples, dtype, one_position.get(id(rule))))
    return pieces


def with_jacobian_pieces(
    owner: Any, wanted: list[str], pieces: dict[str, tf.Tensor], x: Any, y: tf.Tensor
) -> dict[str, tf.Tensor]:
    """``pieces`` and, for the ``wanted`` variables they lack, the diagonal over the batch from
    per-example Jacobians. ``owner`` has ``params``, ``likelihood`` and ``curvature_type``."""
    rest = [name for name in wanted if name not in pieces]
    if not rest:
        return pieces
    rest_params = owner.params.restricted(rest)
    by_jacobians = jacobian_diagonal(rest_params, owner.likelihood, owner.curvature_type, x, y)
    return {**pieces, **dict(zip(rest_params.names, tf.split(by_jacobians, rest_params.sizes), strict=True))}


def probe_rules(params: ModelParameters) -> list:
    """The probe rules of the selected layers (K-FAC's and the diagonal-only ones), when every selected
    variable is whole; none otherwise (masks select parts of variables: the Jacobian path)."""
    whole = all(size == int(np.prod(shape)) for size, shape in zip(params.sizes, params.shapes, strict=True))
    if not whole:
        return []
    return find_rules(params.model, set(params.names)) + diagonal_rules(params.model, set(params.names))


def diagonal_rules(model: Any, selected_paths: set[str]) -> list:
    """The probe rules that give only diagonals (no $A \\otimes G$): normalisations' scale and
    shift, depthwise, separable and grouped convolutions, recurrent layers."""
    return (
        scale_shift_rules(model, selected_paths)
        + depthwise_rules(model, selected_paths)
        + recurrent_rules(model, selected_paths)
    )


def per_example_memory(rules: list, params: ModelParameters) -> int:
    """The largest per-example, per-column gradient a rule forms (`squared_gradient_sums`), in numbers:
    a kernel's size, unless the layer is a Dense on matrices (factorised) or an Embedding."""
    sizes = [
        rule.kernel_size
        for rule in rules
        if rule.kind not in ("embedding", "scale_shift")
        and not (rule.kind == "dense" and rule.per_example and params.rows_are_examples and input_rank(rule.layer) == 2)
    ]
    return max(sizes, default=0)


def jacobian_diagonal(
    params: ModelParameters, likelihood: Likelihood, curvature_type: CurvatureType, x: tf.Tensor, y: tf.Tensor
) -> tf.Tensor:
    """The exact GGN (or empirical Fisher) diagonal of ``params`` over a batch, from per-example
    Jacobians (or gradients): for the variables a layer rule does not cover."""
    if curvature_type == CurvatureType.EF:
        return diag.from_gradients(loss_gradients(params.apply, likelihood, params.theta, x, y, params.vectorize)[1])
    f, jacobians = output_jacobians(params.apply, params.theta, x, params.vectorize)
    return diag.from_jacobians(jacobians, likelihood.hessian_times(f, jacobians))
