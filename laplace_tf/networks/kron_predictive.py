r"""The GLM predictive of a Kronecker-factored posterior from Dense layers' factors.

For a Dense layer with ``(batch, d_in)`` inputs, one example's Jacobian of output $k$ in the
kernel is the outer product $a_n \otimes g_{nk}$ of the layer's input and the gradient of
$f_{nk}$ in its pre-activation (`layer_factors`). In the block's eigenbasis,
$r = Q_A^\top a_n$, $u_k = Q_G^\top g_{nk}$, it contributes

$$
(J \Sigma J^\top)_{kl} = \sum_j u_{kj} u_{lj} \sum_i r_i^2 / E_{ij},
$$

in $O(d_{in}^2 + K d_{out}^2 + K^2 d_{out})$ per example, where rotating the ``(K, d_in d_out)``
Jacobian takes $O(K d_{in} d_{out} (d_{in} + d_{out}))$. A bias block is the same with $a = 1$;
the other blocks (convolutions, diagonal blocks, a layer the forward pass calls more than once)
take their per-example Jacobians.

Example:
    ```python
    >>> la = lt.Laplace(cnn, "classification", hessian_structure="kron").fit((x, y))
    >>> la.predict(x_test)        # this path for the Dense layers on 2-D inputs
    ```
"""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.curvature.kfac_layers import LayerRule, covered_paths
from laplace_tf.networks.params import ModelParameters
from laplace_tf.networks.posterior.kron import EigenBlock, KronPosterior, block_variance


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
