r"""A Gaussian posterior with a block-diagonal, Kronecker-factored precision.

Each Kronecker block's factors are eigendecomposed once, $A = Q_A \operatorname{diag}(\alpha)
Q_A^\top$, $G = Q_G \operatorname{diag}(\gamma) Q_G^\top$, so the block's precision
$s\, A \otimes G + \lambda I = (Q_A \otimes Q_G) \operatorname{diag}(s\, \alpha \otimes \gamma
+ \lambda) (Q_A \otimes Q_G)^\top$ has eigenvalues $E_{ij} = s \alpha_i \gamma_j + \lambda$
for any scale $s$ and prior $\lambda$ (which must be one number per block). Then,
without forming the ``P x P`` matrix:

* $\log\det P = \sum_{ij} \log E_{ij}$;
* a draw is $\mu + \mathrm{vec}(Q_A (Z \oslash \sqrt{E}) Q_G^\top)$;
* the functional variance of a Jacobian block $J_k$ (reshaped to ``(d_in, d_out)``) is
  $\sum_{ij} (Q_A^\top J_k Q_G)_{ij} (Q_A^\top J_l Q_G)_{ij} / E_{ij}$.

Diagonal blocks (variables without a Kronecker rule) are as in [`DiagPosterior`][laplace_tf.DiagPosterior].

Example:
    ```python
    >>> la = lt.Laplace(model, "classification", hessian_structure="kron").fit((x, y))
    >>> la.posterior.precision_operator()     # a tf.linalg.LinearOperator, never densified
    ```
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from laplace_tf.networks.curvature.kron import DiagBlock, KronCurvature
from laplace_tf.networks.posterior import host_lapack
from laplace_tf.networks.posterior.full import NotPositiveDefiniteError
from laplace_tf.networks.posterior.kron_operator import KroneckerEigenOperator, rotate, unrotate
from laplace_tf.seeds import stateless_seed

tfd = tfp.distributions


@dataclass
class EigenBlock:
    """A Kronecker block's eigendecomposition; ``input_vectors`` is ``None`` for a diagonal A."""

    input_values: tf.Tensor
    input_vectors: tf.Tensor | None
    output_values: tf.Tensor
    output_vectors: tf.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.input_values.shape[0]), int(self.output_values.shape[0])

    def rotate(self, matrices: tf.Tensor) -> tf.Tensor:
        """$Q_A^\\top M Q_G$ for ``(..., d_in, d_out)``."""
        return rotate(matrices, self.input_vectors, self.output_vectors)

    def unrotate(self, matrices: tf.Tensor) -> tf.Tensor:
        """$Q_A M Q_G^\\top$ for ``(..., d_in, d_out)``."""
        return unrotate(matrices, self.input_vectors, self.output_vectors)


def decompose(curvature: KronCurvature) -> list[EigenBlock | DiagBlock]:
    """Eigendecomposes every Kronecker block's factors (negatives from round-off set to zero), by
    LAPACK on the host where it can (a fit's factors are constants: `host_lapack`)."""
    decomposed = []
    for block in curvature.blocks:
        if isinstance(block, DiagBlock):
            decomposed.append(block)
            continue
        output_values, output_vectors = host_lapack.eigh(block.output_factor)
        if block.input_factor.shape.rank == 1:
            input_values, input_vectors = block.input_factor, None
        else:
            input_values, input_vectors = host_lapack.eigh(block.input_factor)
        decomposed.append(
            EigenBlock(tf.maximum(input_values, 0.0), input_vectors, tf.maximum(output_values, 0.0), output_vectors)
        )
    return decomposed


class KronPosterior:
    """$\\mathcal{N}(\\mu, P^{-1})$ with a block-diagonal Kronecker-factored precision.

    Args:
      mean: the MAP, ``(P,)``.
      blocks: the decomposed curvature blocks (`decompose`), in parameter order.
      curvature_scale: $s$.
      prior_precision: the per-parameter prior ``(P,)``; constant within each Kronecker block.
    """

    structure = "kron"

    def __init__(self, mean: tf.Tensor, blocks: list, curvature_scale: tf.Tensor, prior_precision: tf.Tensor):
        self.mean = mean
        self.blocks = blocks
        self.sizes = [_size(b) for b in blocks]
        priors = tf.split(prior_precision, self.sizes)
        self.eigenvalues = [_eigenvalues(b, curvature_scale, p) for b, p in zip(blocks, priors, strict=True)]
        if tf.executing_eagerly():
            smallest = min(float(tf.reduce_min(e)) for e in self.eigenvalues)
            if not smallest > 0:
                raise NotPositiveDefiniteError(
                    f"The Kronecker-factored posterior precision has a non-positive eigenvalue ({smallest:.3g}); "
                    "use a positive prior precision."
                )

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[0])

    @property
    def log_det_precision(self) -> tf.Tensor:
        return tf.add_n([tf.reduce_sum(tf.math.log(e)) for e in self.eigenvalues])

    @property
    def variance(self) -> tf.Tensor:
        """The marginal variances, ``(P,)``: $(Q_A^{\\circ 2}) E^{\\circ -1} (Q_G^{\\circ 2})^\\top$."""
        pieces = []
        for block, e in zip(self.blocks, self.eigenvalues, strict=True):
            if isinstance(block, DiagBlock):
                pieces.append(1.0 / e)
                continue
            inverse = 1.0 / e
            if block.input_vectors is not None:
                inverse = tf.matmul(tf.square(block.input_vectors), inverse)
            pieces.append(tf.reshape(tf.matmul(inverse, tf.square(block.output_vectors), transpose_b=True), [-1]))
        return tf.concat(pieces, axis=0)

    @property
    def covariance(self) -> tf.Tensor:
        """The dense ``(P, P)`` covariance (for small models and tests)."""
        return self.operator(power=-1.0).to_dense()

    def precision_operator(self) -> tf.linalg.LinearOperator:
        """The precision as a block-diagonal ``tf.linalg.LinearOperator`` of Kronecker eigen-structures
        (`KroneckerEigenOperator`) and diagonals, never densified."""
        return self.operator(power=1.0)

    def operator(self, power: float) -> tf.linalg.LinearOperator:
        """The precision to the ``power``, $Q \\operatorname{diag}(E^{power}) Q^\\top$ block by
        block: ``-1`` the covariance, ``-0.5`` its symmetric square root."""
        return tf.linalg.LinearOperatorBlockDiag(
            [_block_operator(b, e**power) for b, e in zip(self.blocks, self.eigenvalues, strict=True)],
            is_non_singular=True,
            is_self_adjoint=True,
            is_positive_definite=True,
            is_square=True,
        )

    def distribution(self) -> tfd.Distribution:
        """The posterior as a TFP distribution whose scale is the covariance's symmetric square root
        $P^{-1/2}$, a structured operator (`operator`)."""
        return tfd.MultivariateNormalLinearOperator(loc=self.mean, scale=self.operator(power=-0.5))

    def sample(self, n_samples: int, seed: int | None = None) -> tf.Tensor:
        """``n_samples`` draws, ``(n_samples, P)``."""
        z = tf.random.stateless_normal([n_samples, self.n_params], seed=stateless_seed(seed), dtype=self.mean.dtype)
        pieces = []
        for block, e, piece in zip(self.blocks, self.eigenvalues, tf.split(z, self.sizes, axis=1), strict=True):
            if isinstance(block, DiagBlock):
                pieces.append(piece * tf.math.rsqrt(e))
                continue
            whitened = tf.reshape(piece, [n_samples, *block.shape]) * tf.math.rsqrt(e)
            pieces.append(tf.reshape(block.unrotate(whitened), [n_samples, -1]))
        return self.mean[None, :] + tf.concat(pieces, axis=1)

    def log_prob(self, theta: tf.Tensor) -> tf.Tensor:
        """The log density at ``theta`` of shape ``(..., P)``."""
        delta = theta - self.mean
        batch_shape = tf.shape(delta)[:-1]
        quadratic = 0.0
        for block, e, piece in zip(self.blocks, self.eigenvalues, tf.split(delta, self.sizes, axis=-1), strict=True):
            if isinstance(block, DiagBlock):
                quadratic += tf.reduce_sum(e * tf.square(piece), axis=-1)
                continue
            rotated = block.rotate(tf.reshape(piece, tf.concat([batch_shape, block.shape], 0)))
            quadratic += tf.reduce_sum(e * tf.square(rotated), axis=[-2, -1])
        log_two_pi = tf.cast(np.log(2 * np.pi), self.mean.dtype)
        return -0.5 * (quadratic + self.n_params * log_two_pi - self.log_det_precision)

    def functional_variance(self, jacobians: tf.Tensor) -> tf.Tensor:
        """$J_b P^{-1} J_b^\\top$ for Jacobians ``(B, K, P)``, block by block, ``(B, K, K)``."""
        pieces = tf.split(jacobians, self.sizes, axis=-1)
        terms = zip(self.blocks, self.eigenvalues, pieces, strict=True)
        return tf.add_n([block_variance(block, e, piece) for block, e, piece in terms])


def block_variance(block: EigenBlock | DiagBlock, eigenvalues: tf.Tensor, jacobians: tf.Tensor) -> tf.Tensor:
    """One block's $J_b P_b^{-1} J_b^\\top$ ``(B, K, K)`` for its Jacobians ``(B, K, size)``: in the
    block's eigenbasis, $P_b^{-1}$ is the elementwise inverse of its eigenvalues."""
    if isinstance(block, DiagBlock):
        return tf.matmul(jacobians / eigenvalues, jacobians, transpose_b=True)
    batch, k = tf.shape(jacobians)[0], tf.shape(jacobians)[1]
    rotated = block.rotate(tf.reshape(jacobians, tf.concat([[batch, k], block.shape], 0)))
    flat = tf.reshape(rotated, [batch, k, -1])
    return tf.matmul(flat / tf.reshape(eigenvalues, [-1]), flat, transpose_b=True)


def _size(block: EigenBlock | DiagBlock) -> int:
    if isinstance(block, DiagBlock):
        return int(block.diagonal.shape[0])
    return block.shape[0] * block.shape[1]


def _eigenvalues(block: EigenBlock | DiagBlock, scale: tf.Tensor, prior: tf.Tensor) -> tf.Tensor:
    if isinstance(block, DiagBlock):
        return scale * block.diagonal + prior
    if tf.executing_eagerly() and not np.allclose(prior.numpy(), prior.numpy()[0]):
        raise ValueError(
            "hessian_structure='kron' needs one prior precision per Kronecker block: "
            "use a scalar or layerwise (per-variable) prior precision, not a per-parameter one."
        )
    return scale * block.input_values[:, None] * block.output_values[None, :] + prior[0]


def _block_operator(block: EigenBlock | DiagBlock, values: tf.Tensor) -> tf.linalg.LinearOperator:
    """A block's $Q \\operatorname{diag}(V) Q^\\top$ for its eigenvalues ``values`` (diagonal blocks: $V$)."""
    if isinstance(block, DiagBlock):
        return tf.linalg.LinearOperatorDiag(values, is_positive_definite=True)
    return KroneckerEigenOperator(block.input_vectors, block.output_vectors, values, is_positive_definite=True)
