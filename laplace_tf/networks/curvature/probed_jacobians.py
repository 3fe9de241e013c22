r"""Per-example output Jacobians ``(B, K, P)`` from layer probes, without nested ``pfor``.

`jacobians.output_jacobians` differentiates each example on its own: ``K`` backward passes per
example, vectorised twice (over outputs and examples), which is costly to trace. The probes
(`curvature.probe_passes`) give the gradient of every output $f_{nk}$ at each probed layer's
output in ``K`` backward passes of the whole batch; example $n$'s Jacobian in the layer's
weights follows from its inputs (`probe_squares.per_example_gradients`; for a kernel
$\sum_t a_{nt} g_{ntk}^\top$). Variables without a probe rule, or whose layer's inputs are not
grouped by example, are differentiated per example as before, through the same weights.

The numbers are the same Jacobians; only the work differs. Used wherever a structure needs
``(B, K, P)`` Jacobians: the GLM predictive and the full GGN.

Example:
    ```python
    >>> jacobians = jacobians_function(params)
    >>> f, J = jacobians(params.theta, x)           # (B, K), (B, K, P)
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks.curvature.diag_probes import probe_rules
from laplace_tf.networks.curvature.jacobians import output_jacobians
from laplace_tf.networks.curvature.kfac_layers import uncovered_size
from laplace_tf.networks.curvature.probe_passes import ProbeRun, run_probes
from laplace_tf.networks.curvature.probe_squares import per_example_gradients, rows_grouped_by_example
from laplace_tf.networks.params import ModelParameters


def jacobians_function(params: ModelParameters) -> Callable[[tf.Tensor, Any], tuple[tf.Tensor, tf.Tensor]]:
    """``(theta, x) -> (f, J)``: by probes where the selected layers have rules (whole variables),
    else example by example (`jacobians.output_jacobians`); all example by example when the
    model is looped (not vectorised) for variables without a rule anyway."""
    rules = probe_rules(params)
    probed_size = params.n_params - uncovered_size(params, rules)  # the Jacobian's columns the probes give
    if not rules or looped_anyway(params, rules):  # a model looped example by example (recurrent): one loop for all
        return lambda theta, x: output_jacobians(params.apply, theta, x, params.vectorize)

    def jacobians(theta: tf.Tensor, x: Any) -> tuple[tf.Tensor, tf.Tensor]:
        f, blocks = run_probes(
            params,
            rules,
            theta,
            x,
            every_output,
            lambda run: per_output_blocks(params, rules, run),
            lambda outputs: outputs,
            concatenate=True,
            weight_numbers=probed_size,
        )
        return f, tf.concat(examples_first(params, theta, x, blocks), axis=-1)

    return jacobians


def looped_anyway(params: ModelParameters, rules: list) -> bool:
    """Whether the model is looped example by example (not vectorised) for variables the ``rules``
    leave out anyway: then one per-example loop serves every variable better than probes and a loop."""
    return not params.vectorize and uncovered_size(params, rules) > 0


def per_output_blocks(params: ModelParameters, rules: list, run: ProbeRun) -> dict[str, tf.Tensor]:
    """Variable path -> ``(C, B, size)``: the Jacobian's rows of the run's columns (outputs), for
    the variables of ``rules`` whose inputs are grouped by example."""
    batch, blocks = tf.shape(run.f)[0], {}
    sizes = dict(zip(params.names, params.sizes, strict=True))
    for rule, gradients in zip(rules, run.gradients, strict=True):
        if rule.probes and rows_grouped_by_example(rule, run.static_examples):
            for path, g in per_example_gradients(rule, gradients, run.examples, params.dtype).items():
                # (C, B, size) or, tiled, (1, C * B, size) with copy c first: either way column-major
                blocks[path] = tf.reshape(g, [-1, batch, sizes[path]])
    return blocks


def examples_first(
    params: ModelParameters, theta: tf.Tensor, x: Any, blocks: dict[str, tf.Tensor], wanted: list[str] | None = None
) -> list[tf.Tensor]:
    """The ``wanted`` variables' Jacobians ``(B, K, size)`` in ``params`` order (default: all): the
    probes' ``blocks`` ``(K, B, size)`` transposed, the others differentiated example by example."""
    wanted = params.names if wanted is None else wanted
    rest = [name for name in wanted if name not in blocks]
    jacobians = _differentiated_per_example(params, theta, x, rest) if rest else {}
    jacobians.update({path: tf.transpose(block, [1, 0, 2]) for path, block in blocks.items() if path in wanted})
    return [jacobians[name] for name in params.names if name in wanted]


def every_output(f: tf.Tensor) -> tf.Tensor:
    """Columns ``(1, K, K)`` picking each output, for every example alike: the probes' gradients
    are those of $\\sum_n f_{nk}$."""
    return tf.constant(np.eye(f.shape[-1])[None], f.dtype)  # one graph constant, where tf.eye builds six ops


def _differentiated_per_example(
    params: ModelParameters, theta: tf.Tensor, x: Any, names: list[str]
) -> dict[str, tf.Tensor]:
    """The Jacobians ``(B, K, size)`` of the named variables, example by example, at ``theta``."""
    pieces = dict(zip(params.names, tf.split(theta, params.sizes), strict=True))
    chosen = [name for name in params.names if name in names]
    sizes = [size for name, size in zip(params.names, params.sizes, strict=True) if name in names]

    def apply(subset: tf.Tensor, inputs: Any) -> tf.Tensor:
        replaced = dict(zip(chosen, tf.split(subset, sizes), strict=True))
        return params.apply(tf.concat([replaced.get(n, pieces[n]) for n in params.names], 0), inputs)

    subset = tf.concat([pieces[name] for name in chosen], 0)
    _, jacobians = output_jacobians(apply, subset, x, params.vectorize)
    return dict(zip(chosen, tf.split(jacobians, sizes, axis=-1), strict=True))
