r"""Dense layers' factors for the closed-form GLM predictives of kron and diag posteriors.

For a Dense layer on ``(batch, d_in)`` inputs, example $n$'s Jacobian of output $k$ in the kernel
is the outer product $a_n g_{nk}^\top$ of the layer's input and the gradient of $f_{nk}$ at its
pre-activation output. `kron_predictive` and `diag_predictive` form $J \Sigma J^\top$ from these
factors in $O(d_{in} + d_{out})$ numbers per example and output, never the $d_{in} d_{out}$ Jacobian
entries (nor, for kron, their rotation into the posterior's eigenbasis: for a CNN's Dense head
most of the predictive's work).

One run of the probes (`curvature.probe_passes`: a backward pass of the batch per output) gives
the factors and, for the other probed layers (convolutions, normalisations, recurrent layers),
their per-example Jacobians; variables without a probe rule are differentiated example by
example. A Dense layer the forward pass calls more than once (shared weights), or not at all,
takes per-example Jacobians like those.

Example:
    ```python
    >>> factors = layer_factors(params)            # None if no Dense layer takes matrices
    >>> f, inputs, gradients, leftover = factors(params.theta, x)
    >>> factors.factored                           # the rules behind inputs and gradients
    ```
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from laplace_tf.networks.curvature import compile_for_batches
from laplace_tf.networks.curvature.diag_probes import probe_rules
from laplace_tf.networks.curvature.kfac_layers import LayerRule, covered_paths, uncovered_size
from laplace_tf.networks.curvature.probe_passes import ProbeRun, run_probes
from laplace_tf.networks.curvature.probe_squares import rows_grouped_by_example
from laplace_tf.networks.curvature.probed_jacobians import (
    every_output,
    examples_first,
    looped_anyway,
    per_output_blocks,
)
from laplace_tf.networks.params import ModelParameters
from laplace_tf.vectorizing import input_rank


class LayerFactors:
    """Compiled ``(theta, x) -> (f, inputs [(B, d_in)], gradients [(K, B, d_out)], leftover (B, K, P'))``:
    per factored Dense layer (`factored`, known once the first call is traced) its inputs and
    pre-activation gradients, and the Jacobians of every other variable in ``params`` order."""

    def __init__(self, params: ModelParameters, rules: list, candidates: list[LayerRule]):
        self.params, self.candidates = params, candidates
        others = [] if looped_anyway(params, rules) else [r for r in rules if all(r is not c for c in candidates)]
        self.rules = candidates + others
        # what the probes form per example and column: the candidates' factors, the others' Jacobian rows
        self._weight_numbers = sum(r.input_dim + r.output_dim for r in candidates) + (
            params.n_params - uncovered_size(params, others)
        )
        self.factored: list[LayerRule] = []
        self._compiled = compile_for_batches(self._factors, params.model)

    def __call__(self, theta: tf.Tensor, x: Any) -> tuple:
        return self._compiled(theta, x)

    @property
    def jacobian_width(self) -> int:
        """The leftover Jacobian's columns per example and output, if every candidate is factored."""
        return uncovered_size(self.params, self.candidates)

    def _factors(self, theta: tf.Tensor, x: Any) -> tuple:
        params = self.params
        f, (factors, blocks) = run_probes(
            params,
            self.rules,
            theta,
            x,
            every_output,
            self._per_chunk,
            lambda outputs: outputs,
            concatenate=True,
            weight_numbers=self._weight_numbers,
        )
        self.factored = [rule for rule in self.candidates if rule.kernel.path in factors]
        inputs = [_first(factors[rule.kernel.path][0]) for rule in self.factored]  # every chunk's are the same
        gradients = [factors[rule.kernel.path][1] for rule in self.factored]
        covered = covered_paths(self.factored)
        leftover = [name for name in params.names if name not in covered]
        if not leftover:
            return f, inputs, gradients, tf.zeros([tf.shape(f)[0], f.shape[-1], 0], f.dtype)
        return f, inputs, gradients, tf.concat(examples_first(params, theta, x, blocks, leftover), axis=-1)

    def _per_chunk(self, run: ProbeRun) -> tuple[dict, dict]:
        """Kernel path -> (inputs ``(1, B, d_in)``, gradients ``(C, B, d_out)``) for the candidates
        the forward pass called once, and the other rules' Jacobian blocks ``(C, B, size)``."""
        factors, rest, rest_gradients = {}, [], []
        for rule, gradients in zip(self.rules, run.gradients, strict=True):
            called_once = len(rule.probes) == 1 and rows_grouped_by_example(rule, run.static_examples)
            if any(rule is c for c in self.candidates) and called_once and rule.probes[0].inputs.shape.rank == 2:
                factors[rule.kernel.path] = _dense_factors(rule, gradients[0], run, self.params.dtype)
            else:
                rest.append(rule)
                rest_gradients.append(gradients)
        rest_run = ProbeRun(run.f, rest_gradients, run.examples, run.static_examples)
        return factors, per_output_blocks(self.params, rest, rest_run)


def layer_factors(params: ModelParameters) -> LayerFactors | None:
    """The factors' compiled function if some selected Dense layer takes matrices and every selected
    variable is whole (no masks) and the batch's rows are its examples; else ``None``."""
    rules = probe_rules(params) if params.rows_are_examples else []
    candidates = [rule for rule in rules if _takes_matrices(rule)]
    return LayerFactors(params, rules, candidates) if candidates else None


def _first(stacked: tf.Tensor) -> tf.Tensor:
    return tf.squeeze(stacked, 0) if stacked.shape[0] == 1 else stacked[0]


def _takes_matrices(rule: Any) -> bool:
    return rule.kind == "dense" and rule.per_example and input_rank(rule.layer) == 2


def _dense_factors(rule: LayerRule, g: tf.Tensor, run: ProbeRun, dtype: tf.DType) -> tuple[tf.Tensor, tf.Tensor]:
    """A Dense layer's inputs ``(1, rows, d_in)`` and output gradients ``(C, rows, d_out)`` from its
    probe's rows and gradients ``(C', rows * copies, d_out)``: ``rows`` is ``B``, unless the model
    folds positions into the batch axis before the layer (`check_one_row_per_example`)."""
    inputs = rule.probes[0].inputs
    if run.copies > 1:  # tiled: copy 0's inputs; the gradients by column
        inputs = tf.reshape(inputs, [run.copies, -1, rule.input_dim])[0]
        g = tf.reshape(g, [run.copies, -1, rule.output_dim])
    return tf.expand_dims(tf.cast(inputs, dtype), 0), tf.cast(g, dtype)


def check_one_row_per_example(rules: list[LayerRule], inputs: list[tf.Tensor], f: tf.Tensor) -> None:
    """Raises a ``ValueError`` if a factored Dense layer saw other than one row per example: a model
    that folds positions into the batch axis (``(B * T, d)`` rows), which tracing cannot tell apart."""
    for rule, rows in zip(rules, inputs, strict=True):
        if rows.shape[0] != f.shape[0]:
            raise ValueError(
                f"Dense layer {rule.layer.name!r} sees {rows.shape[0]} rows for {f.shape[0]} examples (the model "
                "folds positions into the batch axis), which the closed-form GLM predictive cannot take: use "
                "pred_type='nn', or subset_of_weights masks (per-example Jacobians)."
            )
