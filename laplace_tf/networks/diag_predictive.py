r"""The GLM predictive of a diagonal posterior from Dense-layer factors, without per-example Jacobians.

For a Dense layer on ``(batch, d_in)`` inputs, example $n$'s Jacobian of output $k$ in the kernel
is $a_n g_{nk}^\top$ (`layer_factors` records both in one forward and ``K`` backward passes of
the batch). With the kernel's posterior variances $S \in \mathbb{R}^{d_{in} \times d_{out}}$,

$$
(J \Sigma J^\top)_{kl} = \sum_{i,j} a_{ni}^2 S_{ij}\, g_{nkj} g_{nlj} = g_{nk}^\top \operatorname{diag}(w_n)\, g_{nl},
\qquad w_n = (a_n \odot a_n)^\top S,
$$

in $O(d_{in} d_{out} + K^2 d_{out})$ per example; a bias adds $g_{nk}^\top \operatorname{diag}(s_b) g_{nl}$
and the other variables their own small Jacobians.

Example:
    ```python
    >>> la = lt.Laplace(mlp, "classification", hessian_structure="diag").fit((x, y))
    >>> la.predict(x_test)        # this path for the selected Dense layers on 2-D inputs
    ```
"""

from __future__ import annotations

import tensorflow as tf

from laplace_tf.networks.curvature.kfac_layers import LayerRule, covered_paths
from laplace_tf.networks.params import ModelParameters
from laplace_tf.networks.posterior.diag import DiagPosterior


def functional_variance(
    posterior: DiagPosterior,
    params: ModelParameters,
    rules: list[LayerRule],
    inputs: list,
    gradients: list,
    leftover: tf.Tensor,
) -> tf.Tensor:
    """$J \\Sigma J^\\top$ ``(B, K, K)`` from the layers' inputs ``(B, d_in)`` and gradients ``(K, B, d_out)``."""
    variances = dict(zip(params.names, tf.split(posterior.variance, params.sizes), strict=True))
    total = 0.0
    for rule, a, g in zip(rules, inputs, gradients, strict=True):
        kernel = tf.reshape(variances[rule.kernel.path], [rule.input_dim, rule.output_dim])
        weights = tf.matmul(tf.square(a), kernel)  # (B, d_out)
        if rule.bias is not None:
            weights += variances[rule.bias.path]
        u = tf.transpose(g, [1, 0, 2])  # (B, K, d_out)
        total += tf.matmul(u * weights[:, None, :], u, transpose_b=True)
    covered = covered_paths(rules)
    rest = [variances[name] for name in params.names if name not in covered]
    if rest:  # batched matrix products: a three-operand einsum here took twice as long
        total += tf.matmul(leftover * tf.concat(rest, axis=0), leftover, transpose_b=True)
    return total
