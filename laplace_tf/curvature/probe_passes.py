r"""The backward passes that fill the probes: one per column $v_{nc}$, vectorised or tiled.

The probes (`curvature.kfac_layers`, `curvature.norm_layers`) need, for every column $c$, the
gradient of $\sum_n v_{nc}^\top f_n$ at each probed layer's output. Two ways, same numbers:

* ``pfor`` over the columns (`tf.GradientTape.jacobian`): one forward pass, ``C`` backward passes
  vectorised. Gradients come as ``(C, rows, ...)``, the batch's ``B`` examples.
* tiling, for models ``pfor`` cannot vectorise (`vectorizing`): the batch repeated ``C`` times
  (column-major), one forward and one backward pass with column $c$ seeding copy $c$. Each copy
  is then an example of its own, so gradients come as ``(1, C * rows, ...)`` over ``C * B``
  examples; every sum over examples and columns the probes form is unchanged, and K-FAC's input
  moments count each input ``C`` times together with the positions they are divided by.
  This traces one backward pass instead of ``C`` (or a while loop), which is what a first call pays.

Example:
    ```python
    >>> run = run_probes(params, rules, theta, x, lambda f: likelihood.hessian_sqrt(f), tiled=False)
    >>> run.gradients[0][0].shape       # (C, B, d_out) for a Dense layer on matrices
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.curvature.kfac_layers import recording
from laplace_tf.likelihoods import Likelihood
from laplace_tf.options import CurvatureType
from laplace_tf.params import ModelParameters


@dataclass
class ProbeRun:
    """The outputs ``f`` ``(B, K)``, per rule and recorded call the gradients ``(C', rows, ...)``,
    and the number of examples the probes' rows group into (``B``, or ``C * B`` tiled)."""

    f: tf.Tensor
    gradients: list[list[tf.Tensor]]
    examples: tf.Tensor
    static_examples: int | None


def probe_columns(likelihood: Likelihood, curvature_type: CurvatureType, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The ``(B, K, C)`` vectors whose backward passes give the probes' gradients: a square root of
    the output Hessian, or the loss gradient for the empirical Fisher."""
    if curvature_type == CurvatureType.EF:
        return likelihood.loss_gradient(f, y)[:, :, None]
    return likelihood.hessian_sqrt(f)


def run_probes(
    params: ModelParameters, rules: list, theta: tf.Tensor, x: Any, columns: Callable[[tf.Tensor], tf.Tensor]
) -> ProbeRun:
    """The model's outputs and the probes' gradients for ``columns(f)`` ``(B, K, C)``: vectorised
    when ``params.vectorize``, tiled otherwise."""
    if params.vectorize:
        with tf.GradientTape() as tape:
            with recording(rules, tape):
                f = params.apply(theta, x)
            projected = tf.einsum("bkc,bk->c", tf.stop_gradient(columns(f)), f)
        flat = tape.jacobian(projected, _perturbations(rules), unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return ProbeRun(f, _by_rule(rules, flat), tf.shape(f)[0], f.shape[0])
    f = params.apply(theta, x)
    seeds = tf.stop_gradient(columns(f))  # (B, K, C)
    copies = int(seeds.shape[-1])
    tiled = tf.nest.map_structure(lambda t: tf.tile(t, [copies] + [1] * (len(t.shape) - 1)), x)
    with tf.GradientTape() as tape, recording(rules, tape):
        f_tiled = params.apply(theta, tiled)
    seeds = tf.reshape(tf.transpose(seeds, [2, 0, 1]), tf.shape(f_tiled))  # copy c seeded by column c
    flat = tape.gradient(
        f_tiled, _perturbations(rules), output_gradients=seeds, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return ProbeRun(f, _by_rule(rules, [g[None] for g in flat]), tf.shape(f_tiled)[0], f_tiled.shape[0])


def _perturbations(rules: list) -> list[tf.Tensor]:
    return [p for rule in rules for p in rule.perturbations]


def _by_rule(rules: list, flat: list[tf.Tensor]) -> list[list[tf.Tensor]]:
    ends = np.cumsum([len(rule.probes) for rule in rules])
    return [flat[end - len(rule.probes) : end] for rule, end in zip(rules, ends, strict=True)]
