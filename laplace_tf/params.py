r"""A Keras model's trainable weights as one flat vector, and the model as a pure function of it.

With the model's trainable variables :math:`W_1, \dots, W_m`, the flat parameter vector is
:math:`\theta = \mathrm{vec}(W_1) \oplus \dots \oplus \mathrm{vec}(W_m) \in \mathbb{R}^P`
(row-major ``vec``, variables in ``model.trainable_variables`` order), and
:math:`f(\theta, x)` is the model's output with those weights, computed by Keras 3's
``stateless_call`` so that the model's own variables are never modified.

Example::

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> params = ModelParameters(model)
    >>> params.n_params
    8
    >>> params.apply(params.theta, tf.ones([5, 3])).shape
    TensorShape([5, 2])
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


class ModelParameters:
    """The flat view of a built Keras 3 model's trainable variables.

    Args:
      model: a built ``keras.Model`` (Sequential, functional or subclassed) whose outputs are
        ``(batch, outputs)``; a ``(batch,)`` output is treated as ``(batch, 1)``.
    """

    def __init__(self, model: keras.Model):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
        variables = list(model.trainable_variables)
        if not variables:
            raise ValueError(
                "The model has no trainable weights: build it first (call it on a batch of "
                "inputs, or give it a keras.Input), and make sure some layers are trainable."
            )
        self.model = model
        self.variables = variables
        self.names: list[str] = [v.path for v in variables]
        self.shapes: list[tuple[int, ...]] = [tuple(v.shape) for v in variables]
        self.sizes: list[int] = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.n_params: int = int(sum(self.sizes))
        self.dtype: tf.DType = tf.as_dtype(variables[0].dtype)
        self._non_trainable = [v.value for v in model.non_trainable_variables]
        self._call_kwargs = {"training": False} if _accepts_training(model) else {}

    @property
    def theta(self) -> tf.Tensor:
        """The current weights (the MAP, for a trained model) as a flat ``(P,)`` tensor."""
        return flatten([tf.cast(v.value, self.dtype) for v in self.variables])

    def unflatten(self, theta: tf.Tensor) -> list[tf.Tensor]:
        """Splits a flat ``(P,)`` vector into tensors shaped like the trainable variables."""
        pieces = tf.split(theta, self.sizes)
        return [tf.reshape(piece, shape) for piece, shape in zip(pieces, self.shapes, strict=True)]

    def apply(self, theta: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """The model's outputs ``(batch, outputs)`` for inputs ``x`` and weights ``theta``."""
        outputs, _ = self.model.stateless_call(self.unflatten(theta), self._non_trainable, x, **self._call_kwargs)
        outputs = tf.convert_to_tensor(outputs)
        if outputs.shape.rank == 1:
            outputs = outputs[:, None]
        if outputs.shape.rank != 2:
            raise ValueError(
                f"The model returns outputs of shape {outputs.shape}; laplace-tf needs (batch, outputs). "
                "Flatten the outputs in the model (e.g. keras.layers.Flatten())."
            )
        return outputs

    def variable_index(self) -> np.ndarray:
        """For each of the ``P`` parameters, the index of the variable it belongs to."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)


def _accepts_training(model: keras.Model) -> bool:
    """Whether the model's ``call`` takes ``training`` (subclassed models may not)."""
    parameters = inspect.signature(model.call).parameters
    return "training" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def flatten(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates tensors into one flat vector (row-major)."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)
