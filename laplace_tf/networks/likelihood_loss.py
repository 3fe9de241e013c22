r"""A likelihood's negative log density as a Keras loss, saved and loaded with the model.

`LikelihoodLoss` is the per-example loss $\ell(f, y)$ of a laplace-tf likelihood on Keras's
``y_true`` (labels as integers or one-hot, values as columns): softmax cross-entropy, sigmoid
cross-entropy (binary, summed over labels for multilabel), the natural-parameter Gaussian
(heteroscedastic), and for regression $\lVert y - f \rVert^2 / (2 \sigma^2)$ with the noise
$\sigma$ held in a variable that [`MarglikCallback`][laplace_tf.MarglikCallback] updates while
training. Keras averages it over each batch. It is registered with Keras, so a model compiled
with it saves and loads like any other (the noise is stored at its current value).

Example:
    ```python
    >>> loss = LikelihoodLoss("regression", sigma_noise=0.5)
    >>> float(loss(np.zeros((2, 1)), np.ones((2, 1))))      # mean of 1 / (2 * 0.25)
    2.0
    ```
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from laplace_tf.networks.likelihoods import get_likelihood
from laplace_tf.options import Likelihood as LikelihoodName


@keras.saving.register_keras_serializable(package="laplace_tf")
class LikelihoodLoss(keras.losses.Loss):
    """The negative log-likelihood per example of ``likelihood`` (regression: at noise ``sigma_noise``).

    Args:
      likelihood: ``"classification"``, ``"regression"``, ``"binary"``, ``"multilabel"`` or
        ``"heteroscedastic"``.
      sigma_noise: the regression noise (a variable: ``loss.sigma_noise.assign(...)``).
    """

    def __init__(self, likelihood: str, sigma_noise: float = 1.0, name: str = "likelihood_loss", **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.likelihood = get_likelihood(likelihood)
        self.sigma_noise = tf.Variable(float(sigma_noise), trainable=False, dtype=tf.float64, name="sigma_noise")

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        f = tf.cast(y_pred, tf.float64 if y_pred.dtype == tf.float64 else tf.float32)
        f = f[:, None] if f.shape.rank == 1 else f
        nll = self.likelihood.loss(f, _targets(self.likelihood.name, y_true, f))
        if self.likelihood.name == LikelihoodName.REGRESSION:
            nll = nll / tf.cast(tf.square(self.sigma_noise), f.dtype)
        return nll

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "likelihood": self.likelihood.name.value,
            "sigma_noise": float(self.sigma_noise.numpy()),
        }


def _targets(name: LikelihoodName, y: tf.Tensor, f: tf.Tensor) -> tf.Tensor:
    """Keras's ``y_true`` as the likelihood's float ``(B, K)`` targets (labels one-hot)."""
    if name == LikelihoodName.CLASSIFICATION:
        if y.shape.rank == f.shape.rank and y.shape[-1] == f.shape[-1] and f.shape[-1] > 1:
            return tf.cast(y, f.dtype)
        return tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), tf.shape(f)[-1], dtype=f.dtype)
    columns = f.shape[-1] // 2 if name == LikelihoodName.HETEROSCEDASTIC else f.shape[-1]
    return tf.reshape(tf.cast(y, f.dtype), [-1, columns])
