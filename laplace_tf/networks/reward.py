r"""Reward modeling: a Laplace over a reward model fitted on preference pairs (Bradley-Terry).

A reward model $r(\theta, x)$ maps one item (any input structure) to one number. It is
trained on pairs $(x_{n0}, x_{n1})$ with $y_n \in \{0, 1\}$, the index of the preferred item,
under the Bradley-Terry likelihood

$$
p(y_n = k \mid \theta) = \frac{e^{r(\theta, x_{nk})}}{e^{r(\theta, x_{n0})} + e^{r(\theta, x_{n1})}},
$$

which is a two-class softmax over the logits $f_n = (r(\theta, x_{n0}), r(\theta, x_{n1}))$.
So the curvature and the evidence are those of that classification: the GGN is
$\sum_n J_n^\top (\operatorname{diag}(p_n) - p_n p_n^\top) J_n$ with $J_n$ the ``(2, P)``
Jacobian of the pair's two rewards. A Kronecker factor sees both items of a pair as two
positions of one example (the "expand" convention, as for any weight used twice).

Predictions come in two kinds, told apart by the inputs' shape:

* items ``(N, ...)``, as the model takes them: the reward's GLM mean and variance
  ``(N, 1)`` each, $\mathcal{N}(r(\theta_*, x), J \Sigma J^\top)$, as a regression without
  observation noise (the reward is latent);
* pairs ``(N, 2, ...)``, as fitted: the probabilities ``(N, 2)`` of each item being preferred,
  as classification (probit, MC, bridge), which is what reports and grid search score.

Example:
    ```python
    >>> reward = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
    ...                            keras.layers.Dense(1)])
    >>> la = lt.Laplace(reward, "reward_modeling", hessian_structure="kron")
    >>> la.fit((pairs, preferred))         # pairs (N, 2, 8), preferred (N,) in {0, 1}
    >>> mean, var = la.predict(items)      # items (M, 8): each (M, 1)
    >>> la.predict(pairs_test)             # (M, 2): P(item 0 preferred), P(item 1 preferred)
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.networks.inputs import LeafSignature
from laplace_tf.networks.likelihoods import Classification
from laplace_tf.networks.params import ModelParameters
from laplace_tf.options import Likelihood as LikelihoodName


class RewardModeling(Classification):
    """Bradley-Terry preferences: a two-class softmax over a pair's rewards, targets the preferred index."""

    name = LikelihoodName.REWARD_MODELING
    outcome = LikelihoodName.CLASSIFICATION

    def validate_targets(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(
                f"y (preferences) has shape {y.shape}; pass the index of the preferred item of each pair, "
                "0 or 1, shape (N,)."
            )
        return super().validate_targets(y, n_outputs)


class PairParameters(ModelParameters):
    """A reward model's weights, applied to pairs: ``(B, 2, ...)`` inputs give ``(B, 2)`` rewards.

    Both items of all pairs go through the model in one call, as ``2 B`` rows (item ``k`` of
    pair ``n`` is row ``2 n + k``), so layers such as BatchNorm see one batch.
    """

    rows_are_examples = False

    def apply(self, theta: tf.Tensor, x: Any) -> tf.Tensor:
        items = tf.nest.map_structure(_merge_pair_axis, x)
        rewards = super().apply(theta, items)
        if rewards.shape[-1] != 1:
            raise ValueError(
                f"likelihood='reward_modeling' needs a model that outputs one reward per item, (batch, 1); "
                f"this one outputs {rewards.shape[-1]}. Give its last layer one unit."
            )
        return tf.reshape(rewards, [-1, 2])

    def declared_output_count(self) -> int | None:
        """A pair's two rewards, where the model declares one logit per item."""
        return 2 if super().declared_output_count() == 1 else None

    def cache_key(self) -> tuple:
        return ("pairs", *super().cache_key())


def check_pairs(x: Any) -> None:
    """Refuses fitting inputs without a pair axis: every leaf must be ``(N, 2, ...)``."""
    for leaf in tf.nest.flatten(x):
        shape = tuple(leaf.shape)
        if len(shape) < 2 or shape[1] != 2:
            raise ValueError(
                f"likelihood='reward_modeling' fits on pairs of items: x must have shape (N, 2, ...) with "
                f"the two items of each pair on axis 1, got {shape}. Stack them: np.stack([x_a, x_b], axis=1)."
            )


def item_signature(pair_signature: Any) -> Any:
    """The signature of one item: the fitted pairs' signature without the pair axis."""
    return tf.nest.map_structure(lambda leaf: LeafSignature(leaf.shape[1:], leaf.kind), pair_signature)


def _merge_pair_axis(leaf: tf.Tensor) -> tf.Tensor:
    """``(B, 2, ...)`` -> ``(2 B, ...)``, pairs' items adjacent."""
    leaf = tf.convert_to_tensor(leaf)
    item_shape = [tf.shape(leaf)[axis] if size is None else size for axis, size in enumerate(leaf.shape[2:], 2)]
    return tf.reshape(leaf, [-1, *item_shape])
