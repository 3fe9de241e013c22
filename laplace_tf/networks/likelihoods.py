r"""Likelihoods: per-example negative log-likelihoods and their output-space Hessians.

Each likelihood maps network outputs $f \in \mathbb{R}^{B \times K}$ and validated targets
to the per-example loss $\ell(f_b, y_b)$ and its Hessian in ``f``,
$\Lambda_b = \nabla^2_f \ell$, the middle factor of the generalised Gauss-Newton
$\sum_b J_b^\top \Lambda_b J_b$.

* regression (Gaussian, noise $\sigma$): the loss is computed at unit noise,
  $\ell = \tfrac12 \lVert y - f \rVert^2$, $\Lambda = I$; the Laplace scales
  curvature and log-likelihood by $\sigma^{-2}$ and adds the normaliser
  $N K \log(\sigma \sqrt{2\pi})$, so that $\sigma$ stays a differentiable
  hyperparameter.
* classification (softmax over logits): $\ell = -\log \mathrm{softmax}(f)_y$,
  $\Lambda = \operatorname{diag}(p) - p p^\top$.
* binary (sigmoid of one logit): $\ell = -y \log p - (1 - y) \log(1 - p)$,
  $\Lambda = p (1 - p)$.
* heteroscedastic (a mean and a noise per target, in natural parameters): see
  `laplace_tf.networks.heteroscedastic`.
* multilabel (``K`` independent sigmoids, targets in $\{0, 1\}^K$): the binary loss summed
  over labels, $\Lambda = \operatorname{diag}(p \odot (1 - p))$.
* reward modeling (Bradley-Terry preferences between two items): classification of a pair's
  two rewards; see `laplace_tf.networks.reward`.

Example:
    ```python
    >>> lik = get_likelihood("classification")
    >>> y = lik.validate_targets(np.array([0, 2]), n_outputs=3)   # one-hot, float
    >>> lik.loss(tf.zeros([2, 3]), tf.constant(y, tf.float32)).numpy()   # log 3 each
    array([1.0986123, 1.0986123], dtype=float32)
    ```
"""

from __future__ import annotations

import abc
import math

import numpy as np
import tensorflow as tf

from laplace_tf.options import Likelihood as LikelihoodName
from laplace_tf.options import parse_option


class Likelihood(abc.ABC):
    """The interface every likelihood implements."""

    name: LikelihoodName

    @property
    def outcome(self) -> LikelihoodName:
        """What the targets are, for reports and scores (reward modeling's are classes of pairs)."""
        return self.name

    @abc.abstractmethod
    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """Checks targets and returns them as a float ``(B, K)`` array (labels one-hot)."""

    @abc.abstractmethod
    def loss(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """The per-example negative log-likelihood ``(B,)`` (unit noise for regression)."""

    @abc.abstractmethod
    def output_hessian(self, f: tf.Tensor) -> tf.Tensor:
        """The Hessian of `loss` in the outputs, ``(B, K, K)``."""

    def hessian_times(self, f: tf.Tensor, jacobians: tf.Tensor) -> tf.Tensor:
        r"""$\Lambda_b J_b$ for Jacobians ``(B, K, P)``; likelihoods override it with structure."""
        return tf.matmul(self.output_hessian(f), jacobians)

    def output_hessian_sum(self, f: tf.Tensor) -> tf.Tensor:
        r"""$\sum_b \Lambda_b$, ``(K, K)``; likelihoods override it with structure."""
        return tf.reduce_sum(self.output_hessian(f), axis=0)

    def output_hessian_diagonal(self, f: tf.Tensor) -> tf.Tensor:
        r"""The diagonals of the $\Lambda_b$, ``(B, K)``; likelihoods override it with structure."""
        return tf.linalg.diag_part(self.output_hessian(f))

    @abc.abstractmethod
    def hessian_sqrt(self, f: tf.Tensor) -> tf.Tensor:
        r"""$V_b$ with $V_b V_b^\top = \Lambda_b$, ``(B, K, C)``."""

    def hessian_sqrt_columns(self, n_outputs: int) -> int:
        """``C``, the number of columns `hessian_sqrt` gives for ``n_outputs`` outputs (known before
        any graph is built: the probes size their passes by it)."""
        return n_outputs

    @abc.abstractmethod
    def loss_gradient(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        r"""$\nabla_f \ell(f, y)$, ``(B, K)``."""

    @abc.abstractmethod
    def sampled_loss_gradient(self, f: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        r"""$\nabla_f \ell(f, \tilde y)$ with $\tilde y$ drawn from the model, ``(B, K)``.

        Its outer product is $\Lambda_b$ in expectation (the Fisher).
        """

    def log_normalizer(self, n_examples: int, n_outputs: int, sigma_noise: tf.Tensor) -> tf.Tensor:
        """The part of the negative log-likelihood that does not depend on the outputs."""
        return tf.zeros([], dtype=sigma_noise.dtype)


class Regression(Likelihood):
    """Gaussian observations $y \\sim \\mathcal{N}(f, \\sigma^2 I)$."""

    name = LikelihoodName.REGRESSION

    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        columns = as_columns(y, n_outputs)
        if columns is None:
            raise ValueError(
                f"y (regression targets) has shape {np.shape(y)} but the model has {n_outputs} output(s); "
                f"pass y of shape (N, {n_outputs})" + (" or (N,)." if n_outputs == 1 else ".")
            )
        return numbers(columns, "y (regression targets)")

    def loss(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return 0.5 * tf.reduce_sum(tf.square(y - f), axis=-1)

    def output_hessian(self, f: tf.Tensor) -> tf.Tensor:
        batch, k = tf.shape(f)[0], f.shape[-1]
        return tf.eye(k, batch_shape=[batch], dtype=f.dtype)

    def hessian_times(self, f: tf.Tensor, jacobians: tf.Tensor) -> tf.Tensor:
        return jacobians

    def hessian_sqrt(self, f: tf.Tensor) -> tf.Tensor:
        return self.output_hessian(f)

    def loss_gradient(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return f - y

    def sampled_loss_gradient(self, f: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_normal(tf.shape(f), seed=seed, dtype=f.dtype)

    def log_normalizer(self, n_examples: int, n_outputs: int, sigma_noise: tf.Tensor) -> tf.Tensor:
        count = tf.cast(n_examples * n_outputs, sigma_noise.dtype)
        return count * (tf.math.log(sigma_noise) + 0.5 * math.log(2 * math.pi))


class Classification(Likelihood):
    """Categorical observations with probabilities $\\mathrm{softmax}(f)$."""

    name = LikelihoodName.CLASSIFICATION

    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == n_outputs and n_outputs > 1:
            return _validated_one_hot(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                f"y (classification labels) has shape {y.shape}; pass integer labels of shape (N,) "
                f"or one-hot labels of shape (N, {n_outputs})."
            )
        labels = _integer_labels(y, "y (classification labels)")
        bad = (labels < 0) | (labels >= n_outputs)
        if bad.any():
            one_logit = " (one logit is a binary classifier: use the 'binary' likelihood)" if n_outputs == 1 else ""
            raise ValueError(
                f"y (classification labels) must be in [0, {n_outputs}) for a model with {n_outputs} "
                f"outputs{one_logit}; found {labels[bad][:5].tolist()} (at positions "
                f"{np.flatnonzero(bad)[:5].tolist()})."
            )
        return np.eye(n_outputs)[labels]

    def loss(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        r"""$-\sum_k y_k \log \mathrm{softmax}(f)_k$ (a zero label takes no part, even where the
        log-probability underflows): five graph ops to trace, where
        ``tf.nn.softmax_cross_entropy_with_logits`` adds two dozen."""
        return -tf.reduce_sum(tf.math.multiply_no_nan(tf.nn.log_softmax(f), y), axis=-1)

    def output_hessian(self, f: tf.Tensor) -> tf.Tensor:
        r"""$\Lambda = \operatorname{diag}(p) - p p^\top$, its diagonal $p_k (1 - p_k)$ from
        `_complements` (accurate for a confident prediction)."""
        p = tf.nn.softmax(f)
        return tf.linalg.set_diag(-p[:, :, None] * p[:, None, :], p * _complements(p, _most_probable(f)))

    def hessian_times(self, f: tf.Tensor, jacobians: tf.Tensor) -> tf.Tensor:
        r"""$\Lambda J$, row $k$ $p_k (J_k - \sum_j p_j J_j)$, in O(BKP), as $p \odot (D - p^\top D)$
        with $D = J - J_m$, the rows' differences to the most probable class's ($\sum_j p_j = 1$):
        where $p_m \approx 1$, $J_m - \sum_j p_j J_j$ would cancel to rounding noise, while
        $p^\top D$ sums only the other classes' small terms."""
        p = tf.nn.softmax(f)[:, :, None]
        top = tf.gather(jacobians, tf.argmax(f, axis=-1, output_type=tf.int32), axis=1, batch_dims=1)
        differences = jacobians - top[:, None]
        return p * (differences - tf.reduce_sum(p * differences, axis=1, keepdims=True))

    def output_hessian_sum(self, f: tf.Tensor) -> tf.Tensor:
        r"""$\sum_b \Lambda_b$ from the probabilities $P$ ``(B, K)``: $-P^\top P$ off the diagonal,
        $\sum_b p_{bk} (1 - p_{bk})$ on it (no ``(B, K, K)`` stack: a thousand classes)."""
        p = tf.nn.softmax(f)
        diagonal = tf.reduce_sum(p * _complements(p, _most_probable(f)), axis=0)
        return tf.linalg.set_diag(-tf.matmul(p, p, transpose_a=True), diagonal)

    def output_hessian_diagonal(self, f: tf.Tensor) -> tf.Tensor:
        p = tf.nn.softmax(f)
        return p * _complements(p, _most_probable(f))

    def hessian_sqrt(self, f: tf.Tensor) -> tf.Tensor:
        r"""$V$ ``(B, K, K - 1)`` with $V V^\top = \Lambda$, which has rank $K - 1$.

        With $u = \sqrt p$ (a unit vector), $\Lambda = D (I - u u^\top) D$ for
        $D = \operatorname{diag}(u)$, and $I - u u^\top = Q Q^\top$ for $Q$ the Householder
        reflection $H = I - w w^\top / (1 - u_m)$, $w = u - e_m$, without its column $m$
        ($H e_m = u$). So $V = D Q$: $V_{mj} = u_m u_j$ and, for $i \ne m$,
        $V_{ij} = u_i \delta_{ij} - p_i u_j / (1 - u_m)$, where
        $1 - u_m = \sum_{i \ne m} p_i / (1 + u_m)$. The pivot $m$ is each example's most probable
        class, which keeps $V$ as accurate as $\Lambda$'s entries when one class takes almost all
        the probability. One column fewer than outputs is one backward pass fewer wherever the
        columns are used (a two-class softmax, as in reward modelling, needs one).
        """
        p = tf.nn.softmax(f)
        root = tf.sqrt(p)
        classes = f.shape[-1]
        if classes is None or classes < 2:
            return tf.linalg.diag(root) - p[:, :, None] * root[:, None, :]
        pivot = tf.argmax(f, axis=-1, output_type=tf.int32)
        is_pivot = tf.one_hot(pivot, classes, dtype=p.dtype)
        pivot_root = tf.reduce_sum(root * is_pivot, axis=-1, keepdims=True)
        scale = tf.math.divide_no_nan(1 + pivot_root, tf.reduce_sum(p - p * is_pivot, axis=-1, keepdims=True))
        coefficients = tf.where(is_pivot > 0, -pivot_root, p * scale)  # row m: u_m u_j; row i: -p_i u_j / (1 - u_m)
        rows = tf.linalg.diag(root - root * is_pivot) - tf.einsum("bi,bj->bij", coefficients, root)
        before_pivot = tf.expand_dims(np.arange(classes - 1) < tf.expand_dims(pivot, -1), 1)
        return tf.where(before_pivot, rows[:, :, :-1], rows[:, :, 1:])  # every column but the pivot's

    def hessian_sqrt_columns(self, n_outputs: int) -> int:
        return n_outputs - 1 if n_outputs >= 2 else n_outputs

    def loss_gradient(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(f) - y

    def sampled_loss_gradient(self, f: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        labels = tf.random.stateless_categorical(f, 1, seed=seed)[:, 0]
        return tf.nn.softmax(f) - tf.one_hot(labels, tf.shape(f)[-1], dtype=f.dtype)


def _most_probable(f: tf.Tensor) -> tf.Tensor:
    """One-hot ``(B, K)`` of each example's most probable class."""
    classes = f.shape[-1] if f.shape[-1] is not None else tf.shape(f)[-1]
    return tf.one_hot(tf.argmax(f, axis=-1, output_type=tf.int32), classes, dtype=f.dtype)


def _complements(p: tf.Tensor, is_max: tf.Tensor) -> tf.Tensor:
    r"""$1 - p_k$ ``(B, K)``, for the most probable class as $\sum_{j \ne m} p_j$: $1 - p_m$ of a
    confident prediction ($p_m$ within a few roundings of 1) would be mostly rounding error."""
    others = tf.reduce_sum(p - p * is_max, axis=-1, keepdims=True)
    return tf.where(is_max > 0, others, 1 - p)


class Binary(Likelihood):
    """Bernoulli observations with probability $\\sigma(f)$ of one logit.

    Every method but `validate_targets` works label by label, so `Multilabel` shares them.
    """

    name = LikelihoodName.BINARY

    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        if n_outputs != 1:
            raise ValueError(
                f"The binary likelihood needs a model with one output (a logit); this one has "
                f"{n_outputs}. Use likelihood='classification' for {n_outputs} classes."
            )
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y (binary labels) has shape {y.shape}; pass labels of shape (N,) or (N, 1).")
        labels = _integer_labels(y, "y (binary labels)")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            raise ValueError(
                f"y (binary labels) must be 0 or 1; found {labels[bad][:5].tolist()} "
                f"(at positions {np.flatnonzero(bad)[:5].tolist()})."
            )
        return labels[:, None].astype(np.float64)

    def loss(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=f), axis=-1)

    def output_hessian(self, f: tf.Tensor) -> tf.Tensor:
        return tf.linalg.diag(self.output_hessian_diagonal(f))

    def output_hessian_diagonal(self, f: tf.Tensor) -> tf.Tensor:
        r"""$\sigma(f) (1 - \sigma(f)) = \sigma(f) \sigma(-f)$, accurate where $\sigma(f) \approx 1$."""
        return tf.sigmoid(f) * tf.sigmoid(-f)

    def hessian_times(self, f: tf.Tensor, jacobians: tf.Tensor) -> tf.Tensor:
        return self.output_hessian_diagonal(f)[:, :, None] * jacobians

    def hessian_sqrt(self, f: tf.Tensor) -> tf.Tensor:
        return tf.linalg.diag(tf.sqrt(self.output_hessian_diagonal(f)))

    def loss_gradient(self, f: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(f) - y

    def sampled_loss_gradient(self, f: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        p = tf.sigmoid(f)
        return p - tf.cast(tf.random.stateless_uniform(tf.shape(f), seed=seed, dtype=f.dtype) < p, f.dtype)


class Multilabel(Binary):
    """``K`` independent Bernoulli labels with probabilities $\\sigma(f_k)$ (targets ``(N, K)`` of 0/1)."""

    name = LikelihoodName.MULTILABEL

    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        columns = as_columns(y, n_outputs)
        if columns is None:
            raise ValueError(
                f"y (multilabel targets) has shape {np.shape(y)}; pass one 0/1 column per label, shape "
                f"(N, {n_outputs}) for a model with {n_outputs} outputs."
            )
        labels = _integer_labels(columns, "y (multilabel targets)")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            rows, columns = np.nonzero(bad)
            raise ValueError(
                f"y (multilabel targets) must be 0 or 1; found {labels[bad][:5].tolist()} "
                f"(at [example, label] {list(zip(rows[:5].tolist(), columns[:5].tolist(), strict=True))})."
            )
        return labels.astype(np.float64)


def get_likelihood(name: str | LikelihoodName) -> Likelihood:
    """The likelihood for a name: ``"regression"``, ``"classification"``, ``"binary"``,
    ``"multilabel"``, ``"heteroscedastic"`` or ``"reward_modeling"``."""
    from laplace_tf.networks.heteroscedastic import Heteroscedastic
    from laplace_tf.networks.reward import RewardModeling

    option = parse_option(LikelihoodName, name, "likelihood")
    return {
        LikelihoodName.REGRESSION: Regression,
        LikelihoodName.CLASSIFICATION: Classification,
        LikelihoodName.BINARY: Binary,
        LikelihoodName.MULTILABEL: Multilabel,
        LikelihoodName.HETEROSCEDASTIC: Heteroscedastic,
        LikelihoodName.REWARD_MODELING: RewardModeling,
    }[option]()


def as_columns(y: np.ndarray, n_columns: int) -> np.ndarray | None:
    """``y`` as an ``(N, n_columns)`` array (a vector is one column), or ``None`` if it is shaped otherwise."""
    y = np.asarray(y)
    if y.ndim == 1 and n_columns == 1:
        y = y[:, None]
    return y if y.ndim == 2 and y.shape[1] == n_columns else None


def numbers(y: np.ndarray, what: str) -> np.ndarray:
    """``y`` as float64, refusing non-numeric arrays."""
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{what} must be numbers, got dtype {y.dtype}.")
    return y.astype(np.float64)


def _integer_labels(y: np.ndarray, what: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            examples = y[np.isfinite(y) & (y != np.round(y))][:3]
            raise ValueError(f"{what} must be whole numbers; found values such as {examples}.")
        return y.astype(np.int64)
    raise ValueError(f"{what} must be integers, got dtype {y.dtype}.")


def _validated_one_hot(y: np.ndarray) -> np.ndarray:
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)) or (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0):
        raise ValueError(
            "One-hot (or soft) labels must be non-negative and each row must sum to 1; "
            "pass integer labels of shape (N,) instead if these are class indices."
        )
    return y
