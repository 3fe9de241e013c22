r"""The exact diagonal GGN (or empirical Fisher) of Dense layers from K-FAC's probes, without per-example Jacobians.

For a Dense layer on ``(batch, d_in)`` inputs, example $n$'s Jacobian of $v_{nc}^\top f_n$ in the
kernel is the outer product $a_n g_{nc}^\top$ of the layer's input and the gradient in its
pre-activation (`curvature.kfac_layers`). With the columns $v_{nc}$ of a square root of the output
Hessian ($\Lambda_n = V_n V_n^\top$; for the empirical Fisher the loss gradient), the diagonal of
$\sum_n J_n^\top \Lambda_n J_n$ is therefore

$$
\operatorname{diag}_W = \sum_n (a_n \odot a_n) \Big(\sum_c g_{nc} \odot g_{nc}\Big)^\top, \qquad
\operatorname{diag}_b = \sum_{n, c} g_{nc} \odot g_{nc},
$$

exactly: one backward pass of the batch per column, as for K-FAC, instead of a ``(B, K, P)``
Jacobian (which costs ``K`` backward passes per example and a nested ``pfor`` to trace). Layers
without such a rule (convolutions, normalisation, recurrent kernels, Dense layers on sequences,
whose per-example Jacobian sums over positions) keep the per-example Jacobian diagonal, and a
model that calls a layer twice (shared weights; found while tracing) takes the Jacobian path whole.

Example:
    ```python
    >>> la = lt.Laplace(mlp, "classification", hessian_structure="diag").fit((x, y))   # this path
    ```
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from laplace_tf.curvature.kfac_layers import LayerRule, covered_paths, find_rules, in_one_graph_place, recording
from laplace_tf.curvature.kron import jacobian_diagonal
from laplace_tf.likelihoods import Likelihood
from laplace_tf.options import CurvatureType
from laplace_tf.params import ModelParameters
from laplace_tf.vectorizing import input_rank


class ProbedDiagonal:
    """The diagonal curvature's per-batch computation by probes, where the model allows it."""

    def __init__(
        self, params: ModelParameters, likelihood: Likelihood, curvature_type: CurvatureType, by_jacobians: Callable
    ):
        self.params, self.likelihood, self.curvature_type = params, likelihood, curvature_type
        self.by_jacobians = by_jacobians  # (theta, x, y) -> (loss, diagonal), for a layer called twice
        self.rules = matrix_dense_rules(params)
        covered = covered_paths(self.rules)
        leftover = [n for n in params.names if n not in covered]
        self.leftover_params = params.restricted(leftover) if leftover else None

    def batch(self, theta: tf.Tensor, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The summed loss and the diagonal ``(P,)`` over one batch."""
        with tf.GradientTape() as tape:
            with recording(self.rules, tape):
                f = self.params.apply(theta, x)
            if any(len(rule.probes) != 1 for rule in self.rules):  # shared weights: Jacobians sum over calls
                return self.by_jacobians(theta, x, y)
            columns = tf.stop_gradient(self._columns(f, y))  # (B, K, C)
            projected = tf.einsum("bkc,bk->c", columns, f)
        perturbations = [rule.probe.perturbation for rule in self.rules]
        gradients = tape.jacobian(projected, perturbations, experimental_use_pfor=self.params.vectorize)
        pieces = {}
        for rule, g in zip(self.rules, gradients, strict=True):  # g: (C, B, d_out)
            squared = tf.reduce_sum(tf.square(tf.cast(g, theta.dtype)), axis=0)  # (B, d_out)
            inputs = tf.square(tf.cast(rule.probe.inputs, theta.dtype))  # (B, d_in)
            pieces[rule.kernel.path] = tf.reshape(tf.matmul(inputs, squared, transpose_a=True), [-1])
            if rule.bias is not None:
                pieces[rule.bias.path] = tf.reduce_sum(squared, axis=0)
        if self.leftover_params is not None:
            leftover_diagonal = jacobian_diagonal(self.leftover_params, self.likelihood, self.curvature_type, x, y)
            leftover = tf.split(leftover_diagonal, self.leftover_params.sizes)
            pieces.update(zip(self.leftover_params.names, leftover, strict=True))
        diagonal = tf.concat([pieces[name] for name in self.params.names], axis=0)
        return tf.reduce_sum(self.likelihood.loss(f, y)), diagonal

    def _columns(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self.curvature_type == CurvatureType.EF:
            return self.likelihood.loss_gradient(f, y)[:, :, None]
        return self.likelihood.hessian_sqrt(f)


def matrix_dense_rules(params: ModelParameters) -> list[LayerRule]:
    """The probe rules of the selected Dense layers whose rows are examples (2-D inputs, called once),
    when every selected variable is whole; none otherwise."""
    whole = all(size == int(np.prod(shape)) for size, shape in zip(params.sizes, params.shapes, strict=True))
    if not params.rows_are_examples or not whole:  # masks select parts of variables: the Jacobian path
        return []
    return [
        rule
        for rule in find_rules(params.model, set(params.names))
        if rule.kind == "dense" and rule.per_example and in_one_graph_place(rule.layer) and input_rank(rule.layer) == 2
    ]
