r"""The GLM predictive of a Kronecker-factored posterior without per-example network Jacobians.

For a Dense layer with ``(batch, d_in)`` inputs, one example's Jacobian of output $k$ in the
kernel is the outer product $a_n \otimes g_{nk}$ of the layer's input and the gradient of
$f_{nk}$ in its pre-activation. The $g_{nk}$ of every example come from ``K`` backward
passes of the batch (at the same watched layer outputs as K-FAC). In a block's eigenbasis,
$r = Q_A^\top a_n$, $u_k = Q_G^\top g_{nk}$, the block contributes

$$
(J \Sigma J^\top)_{kl} = \sum_j u_{kj} u_{lj} \sum_i r_i^2 / E_{ij},
$$


in $O(d_{in} d_{out} + K^2 d_{out})$ per example, never forming the ``(K, P)`` Jacobian.
A bias block is the same with $a = 1$; variables without a Kronecker rule (diagonal blocks),
and a layer the forward pass calls more than once or not at all, use their own per-example
Jacobians.

Example:
    ```python
    >>> la = lt.Laplace(big_mlp, "classification", hessian_structure="kron").fit((x, y))
    >>> la.predict(x_test)        # this path, when every Kronecker layer is a Dense on 2-D inputs
    ```
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.curvature import compile_for_batches
from laplace_tf.curvature.jacobians import output_jacobians
from laplace_tf.curvature.kfac_layers import LayerRule, covered_paths, find_rules, recording
from laplace_tf.curvature.probe_passes import backward_passes
from laplace_tf.params import ModelParameters
from laplace_tf.posterior.kron import EigenBlock, KronPosterior, block_variance
from laplace_tf.vectorizing import input_rank


def dense_rules(params: ModelParameters) -> list[LayerRule] | None:
    """The layer rules if every one is a Dense layer known to take 2-D inputs and every selected
    variable is whole (no masks), else ``None``. A layer among them that one forward pass calls
    more than once, or not at all, takes per-example Jacobians (`LayerFactors`)."""
    rules = find_rules(params.model, set(params.names))
    whole = all(size == int(np.prod(shape)) for size, shape in zip(params.sizes, params.shapes, strict=True))
    if (
        not rules
        or not whole
        or not params.rows_are_examples
        or any(r.kind != "dense" or not r.per_example or not _takes_matrices(r.layer) for r in rules)
    ):
        return None
    return rules


class LayerFactors:
    """Compiled ``(theta, x) -> (f, layer inputs (B, d_in), pre-activation gradients (K, B, d_out),
    leftover J)`` for the rules whose layer the forward pass calls exactly once (`factored`, known
    from the first call's trace); the other variables, a shared layer's or one the model never
    calls included, take per-example Jacobians (the leftover)."""

    def __init__(self, params: ModelParameters, rules: list[LayerRule]):
        self.params, self.rules = params, rules
        self.factored: list[LayerRule] = []
        self._compiled = compile_for_batches(self._factors, params.model)

    def __call__(self, theta: tf.Tensor, x: Any) -> tuple:
        return self._compiled(theta, x)

    def _factors(self, theta: tf.Tensor, x: Any) -> tuple:
        params = self.params
        with tf.GradientTape(persistent=True) as tape:
            with recording(self.rules, tape):
                f = params.apply(theta, x)
            self.factored = [r for r in self.rules if len(r.probes) == 1]
            dtypes = {r.probe.output.dtype for r in self.factored}
            # examples are independent: one backward pass per output, in each probe dtype (a
            # mixed-precision layer's is float16, which the looped passes need their target in)
            by_dtype_f = {dtype: tf.cast(f, dtype) for dtype in dtypes}
        by_dtype = {}
        for dtype, f_in_dtype in by_dtype_f.items():
            sources = [r.probe.output for r in self.factored if r.probe.output.dtype == dtype]
            units = tf.eye(f.shape[-1], dtype=dtype)[:, None, :]  # output k's cotangent, for every example
            by_dtype[dtype] = iter(backward_passes(tape, f_in_dtype, units, sources, params.vectorize))
        gradients = [tf.cast(next(by_dtype[r.probe.output.dtype]), f.dtype) for r in self.factored]
        inputs = [tf.cast(r.probe.inputs, f.dtype) for r in self.factored]
        covered = covered_paths(self.factored)
        leftover = [n for n in params.names if n not in covered]
        if not leftover:
            return f, inputs, gradients, tf.zeros([tf.shape(f)[0], f.shape[-1], 0], f.dtype)
        leftover_params = params.restricted(leftover)
        leftover_jacobians = output_jacobians(leftover_params.apply, leftover_params.theta, x, params.vectorize)[1]
        return f, inputs, gradients, leftover_jacobians


def functional_variance(
    posterior: KronPosterior,
    params: ModelParameters,
    rules: list[LayerRule],
    inputs: list,
    gradients: list,
    leftover: tf.Tensor,
) -> tf.Tensor:
    """$J \\Sigma J^\\top$ ``(B, K, K)`` from the layers' inputs and gradients."""
    position = {name: i for i, name in enumerate(params.names)}
    total = 0.0
    for rule, a, g in zip(rules, inputs, gradients, strict=True):
        index = position[rule.kernel.path]
        total += _rank_one_variance(posterior.blocks[index], posterior.eigenvalues[index], a, g)
        if rule.bias is not None:
            index = position[rule.bias.path]
            total += _rank_one_variance(
                posterior.blocks[index], posterior.eigenvalues[index], tf.ones_like(a[:, :1]), g
            )
    covered = covered_paths(rules)
    rest = [position[n] for n in params.names if n not in covered]  # diagonal blocks, or a shared layer's
    pieces = tf.split(leftover, [posterior.sizes[i] for i in rest], axis=-1) if rest else []
    for index, piece in zip(rest, pieces, strict=True):
        total += block_variance(posterior.blocks[index], posterior.eigenvalues[index], piece)
    return total


def _rank_one_variance(block: EigenBlock, eigenvalues: tf.Tensor, a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    rotated = a if block.input_vectors is None else tf.matmul(a, block.input_vectors)
    weights = tf.matmul(tf.square(rotated), 1.0 / eigenvalues)  # (B, d_out)
    u = tf.einsum("kbo,oj->bkj", g, block.output_vectors)  # (B, K, d_out)
    return tf.matmul(u * weights[:, None, :], u, transpose_b=True)


def _takes_matrices(layer: keras.layers.Layer) -> bool:
    return input_rank(layer) == 2
