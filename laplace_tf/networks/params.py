r"""A Keras model's trainable weights (or a subset) as one flat vector, and the model as a pure function of it.

With the selected entries of the model's trainable variables $W_1, \dots, W_m$, the flat
parameter vector is $\theta = \mathrm{vec}(W_1)_{S_1} \oplus \dots \oplus
\mathrm{vec}(W_m)_{S_m} \in \mathbb{R}^P$ (row-major ``vec``, variables in
``model.trainable_variables`` order, $S_i$ the selected entries), and $f(\theta, x)$
is the model's output with those weights and every other weight at its current (MAP) value,
computed by Keras 3's ``stateless_call`` so the model's own variables are never modified.
Variables outside the subset enter as constants, so gradients never flow through them.

Example:
    ```python
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    >>> ModelParameters(model).n_params
    26
    >>> ModelParameters(model, "last_layer").n_params     # kernel (4, 2) and bias (2,)
    10
    >>> params = ModelParameters(model, ["*dense_1/bias"])
    >>> params.apply(params.theta, tf.ones([5, 3])).shape
    TensorShape([5, 2])
    ```
"""

from __future__ import annotations

import fnmatch
import inspect
import weakref
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.networks.layer_order import last_called_layer_path
from laplace_tf.networks.validation import check_one_output, declared_logit_count
from laplace_tf.vectorizing import can_vectorize

Subset = str | Sequence[str] | Sequence[Any] | dict[str, Any]


class ModelParameters:
    """The flat view of a built Keras 3 model's trainable variables, or a subset of them.

    Args:
      model: a built ``keras.Model`` (Sequential, functional or subclassed) whose outputs are
        ``(batch, outputs)``; a ``(batch,)`` output is treated as ``(batch, 1)``.
      subset: ``"all"``; ``"last_layer"`` (the variables of the layer that owns the last
        trainable variable: the output layer of Sequential and functional models, and of
        subclassed models that create their layers in call order); a list of ``fnmatch``
        patterns over variable paths, matched in full or from any ``/`` on (so ``["dense_2/*"]``
        matches ``"sequential/dense_2/kernel"``); or
        boolean masks selecting entries, as a list with one per trainable variable (``None``
        for none of it) or a dict from variable path to mask.
    """

    rows_are_examples = True  # each input row is one example (`reward.PairParameters`: two rows per pair)

    def __init__(self, model: keras.Model, subset: Subset = "all"):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
        all_variables = list(model.trainable_variables)
        if not all_variables:
            raise ValueError(
                "The model has no trainable weights: build it first (call it on a batch of "
                "inputs, or give it a keras.Input), and make sure some layers are trainable."
            )
        self._model = weakref.ref(model)  # weak: compiled functions that hold this are cached per model
        self._all_variables = all_variables
        self._call_kwargs = {"training": False} if accepts_training(model) else {}
        last_layer = last_called_layer_path(model, self._call_kwargs) if _is_last_layer(subset) else None
        self._selection = select_indices(all_variables, subset, last_layer)
        chosen = [i for i, s in enumerate(self._selection) if s is not None]
        self.variables = [all_variables[i] for i in chosen]
        self.names: list[str] = [v.path for v in self.variables]
        self.shapes: list[tuple[int, ...]] = [tuple(v.shape) for v in self.variables]
        self.sizes: list[int] = [len(self._selection[i]) for i in chosen]
        self.n_params: int = int(sum(self.sizes))
        self.dtype: tf.DType = tf.as_dtype(all_variables[0].dtype)
        self._non_trainable = [v.value for v in model.non_trainable_variables]
        self.vectorize: bool = can_vectorize(model)  # per-example work by pfor, else looped

    @property
    def model(self) -> keras.Model:
        """The model (held weakly; the [`Laplace`][laplace_tf.Laplace] keeps it alive)."""
        model = self._model()
        if model is None:
            raise ReferenceError("The model of these parameters has been deleted.")
        return model

    def restricted(self, subset: list[str]) -> ModelParameters:
        """The same model's parameters, over the variables matching ``subset`` only."""
        return type(self)(self.model, subset)

    def declared_output_count(self) -> int | None:
        """How many outputs `apply` gives, where the model declares them from an affine output
        layer (logits by construction: nothing a forward pass would need to check); else ``None``."""
        return declared_logit_count(self.model)

    def cache_key(self) -> tuple:
        """What identifies this selection of this model's weights in compiled-function caches."""
        return (
            tuple(self.names),
            tuple(self.sizes),
            self.dtype.name,
            tuple(len(s) if s is not None else 0 for s in self._selection),
        )

    @property
    def theta(self) -> tf.Tensor:
        """The current values of the selected weights (the MAP, for a trained model), ``(P,)``."""
        pieces = []
        for variable, selected in zip(self._all_variables, self._selection, strict=True):
            if selected is not None:
                pieces.append(tf.gather(tf.reshape(tf.cast(variable.value, self.dtype), [-1]), selected))
        return tf.concat(pieces, axis=0)

    def unflatten(self, theta: tf.Tensor) -> list[tf.Tensor]:
        """Values for every trainable variable: ``theta``'s entries where selected, the MAP elsewhere."""
        pieces = iter(tf.split(theta, self.sizes))
        values = []
        for variable, selected in zip(self._all_variables, self._selection, strict=True):
            current = tf.cast(variable.value, self.dtype)
            if selected is None:
                values.append(current)
            elif len(selected) == int(np.prod(variable.shape)):
                values.append(tf.reshape(next(pieces), variable.shape))
            else:
                flat = tf.tensor_scatter_nd_update(tf.reshape(current, [-1]), selected[:, None], next(pieces))
                values.append(tf.reshape(flat, variable.shape))
        return values

    def apply(self, theta: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """The model's outputs ``(batch, outputs)`` for inputs ``x`` and weights ``theta``."""
        outputs, _ = self.model.stateless_call(self.unflatten(theta), self._non_trainable, x, **self._call_kwargs)
        check_one_output(outputs)  # a subclassed model returning several heads
        outputs = tf.nest.flatten(outputs)[0] if isinstance(outputs, (list, tuple, dict)) else outputs
        outputs = tf.cast(outputs, self.dtype)  # a mixed-precision model may compute in float16
        if outputs.shape.rank == 1:
            outputs = outputs[:, None]
        if outputs.shape.rank != 2:
            raise ValueError(
                f"The model returns outputs of shape {outputs.shape}; laplace-tf needs (batch, outputs), one "
                "prediction per example. Per-position outputs (a sequence tagger's (batch, steps, classes)) "
                "are not supported: flattening them would make one softmax over every position. For "
                "regression, flatten the outputs in the model (keras.layers.Flatten()) and y alike."
            )
        return outputs

    def selected_indices(self) -> list[np.ndarray]:
        """Per selected variable, the flat (row-major) indices of its entries in ``theta``."""
        return [selected for selected in self._selection if selected is not None]

    def variable_index(self) -> np.ndarray:
        """For each of the ``P`` parameters, the index (among the selected variables) it belongs to."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)


def select_indices(variables: list, subset: Subset, last_layer: str | None = None) -> list[np.ndarray | None]:
    """Per trainable variable, the selected flat indices (``None`` when none are). ``last_layer``:
    the path of the layer ``"last_layer"`` selects (`layer_order.last_called_layer_path`); by
    default the layer of the last variable."""
    everything = [np.arange(int(np.prod(v.shape))) for v in variables]
    if isinstance(subset, str) and subset == "all":
        return everything
    if isinstance(subset, str) and subset == "last_layer":
        last_layer = last_layer or _layer_path(variables[-1])
        return [e if _layer_path(v) == last_layer else None for e, v in zip(everything, variables, strict=True)]
    if isinstance(subset, str):
        raise ValueError(
            f"subset_of_weights={subset!r} is not valid; choose one of 'all', 'last_layer', "
            "a list of variable-path patterns, or boolean masks per variable."
        )
    if isinstance(subset, dict):
        unknown = set(subset) - {v.path for v in variables}
        if unknown:
            raise ValueError(
                f"subset_of_weights names unknown variables {sorted(unknown)}; they are {[v.path for v in variables]}."
            )
        masks = [subset.get(v.path) for v in variables]
        return _from_masks(masks, variables)
    subset = list(subset)
    if subset and all(isinstance(s, str) for s in subset):
        return _from_patterns(subset, variables, everything)
    if len(subset) != len(variables):
        raise ValueError(
            f"subset_of_weights: give one mask per trainable variable ({len(variables)}), got {len(subset)}."
        )
    return _from_masks(subset, variables)


def _from_patterns(patterns: list[str], variables: list, everything: list) -> list[np.ndarray | None]:
    selection = [
        e if any(_matches(v.path, p) for p in patterns) else None for e, v in zip(everything, variables, strict=True)
    ]
    if all(s is None for s in selection):
        raise ValueError(
            f"subset_of_weights: no trainable variable matches {patterns}; "
            f"the variables are {[v.path for v in variables]}."
        )
    return selection


def _matches(path: str, pattern: str) -> bool:
    """Whether a variable path matches a pattern in full or from any ``/`` boundary on.

    Keras 3 paths carry the model's name (``"sequential/dense_2/kernel"``), so ``"dense_2/*"``
    matches it too.
    """
    parts = path.split("/")
    return any(fnmatch.fnmatch("/".join(parts[i:]), pattern) for i in range(len(parts)))


def _from_masks(masks: list, variables: list) -> list[np.ndarray | None]:
    selection = []
    for mask, variable in zip(masks, variables, strict=True):
        if mask is None:
            selection.append(None)
            continue
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != tuple(variable.shape):
            raise ValueError(
                f"The mask for {variable.path} must be boolean of shape {tuple(variable.shape)}, "
                f"got {mask.dtype} {mask.shape}."
            )
        indices = np.flatnonzero(mask.reshape(-1))
        selection.append(indices if len(indices) else None)
    if all(s is None for s in selection):
        raise ValueError("subset_of_weights: the masks select no parameters.")
    return selection


def _layer_path(variable: Any) -> str:
    """The path of the layer that owns a variable: ``"dense_1"`` for ``"dense_1/kernel"``."""
    return variable.path.rsplit("/", 1)[0]


def _is_last_layer(subset: Subset) -> bool:
    return isinstance(subset, str) and subset == "last_layer"


def accepts_training(model: keras.Model) -> bool:
    """Whether the model's ``call`` takes ``training`` (subclassed models may not)."""
    parameters = inspect.signature(model.call).parameters
    return "training" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())
