"""Checks of user input that run before any expensive work, with errors that say what to do."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.options import Likelihood as LikelihoodName

DEFAULT_MEMORY_FRACTION = 0.5


def positive_number(value: Any, name: str) -> float:
    """``value`` as a float, if it is a positive, finite number; else a TypeError/ValueError naming ``name``."""
    scalar_array = isinstance(value, (np.ndarray, tf.Tensor)) and np.ndim(value) == 0
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.integer, np.floating)) or scalar_array):
        raise TypeError(f"{name} must be a positive number, got {value!r} ({type(value).__name__}).")
    number = float(value)
    if not (np.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite, got {number}.")
    return number


def positive_int(value: Any, name: str) -> int:
    """``value`` if it is a positive integer (not a bool); else a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    return int(value)


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool; else a TypeError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def check_seed(value: Any, name: str = "seed") -> int | None:
    """``None`` or an integer seed; else a TypeError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be None or an integer, got {value!r}.")
    return int(value)


def check_finite(array: np.ndarray, what: str) -> None:
    """Raises if a float array holds NaN or inf, saying where the first bad entries are."""
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad_rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        raise ValueError(
            f"{what} contains NaN or inf (first bad rows: {bad_rows[:5].tolist()}); clean or impute the data first."
        )


def check_same_length(n_inputs: int, n_targets: int) -> None:
    """Raises if inputs and targets disagree on the number of examples."""
    if n_inputs != n_targets:
        raise ValueError(f"x has {n_inputs} examples but y has {n_targets}; they must have the same length.")


def check_weights_finite(names: Sequence[str], values: Sequence[tf.Tensor]) -> None:
    """Raises if any model weight is NaN or inf, naming the variables."""
    bad = [name for name, value in zip(names, values, strict=True) if not np.all(np.isfinite(np.asarray(value)))]
    if bad:
        raise ValueError(
            f"The model's weights contain NaN or inf in {bad}; the training diverged. "
            "Retrain (e.g. with a lower learning rate) before fitting a Laplace approximation."
        )


def available_memory_bytes() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_memory_limit() -> int:
    """Half the machine's physical memory: the default cap on a dense curvature's footprint."""
    return int(DEFAULT_MEMORY_FRACTION * available_memory_bytes())


def check_memory(needed: int, what: str, suggestion: str, memory_limit: int | None) -> None:
    """Raises a MemoryError if ``needed`` bytes for ``what`` exceed the limit, with a ``suggestion``."""
    limit = default_memory_limit() if memory_limit is None else int(memory_limit)
    if needed > limit:
        raise MemoryError(
            f"{what} needs about {format_bytes(needed)}, more than the {format_bytes(limit)} allowed "
            f"(memory_limit); {suggestion}."
        )


def check_outputs_are_logits(model: Any, likelihood: Any) -> None:
    """Refuses a model whose final operation squashes its outputs: the likelihoods expect logits.

    Looks through the output layer of Sequential and functional models, into nested models: a
    ``Softmax`` layer, an ``Activation`` or any layer with ``activation`` softmax or sigmoid
    (`check_outputs_are_not_probabilities` catches subclassed models by their outputs).
    """
    if likelihood == LikelihoodName.REGRESSION:
        return
    squashing = _final_squashing(model)
    if squashing is not None:
        raise ValueError(
            f"The model's last layer applies {squashing}, but laplace-tf needs logits: rebuild the model "
            "without it (activation=None on the last layer, no Softmax layer; train with from_logits=True)."
        )


def check_not_stateful(model: Any) -> None:
    """Refuses a model with a stateful recurrent layer: its outputs depend on the state carried
    over from earlier batches, so they are no function of the weights and the inputs alone."""
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    stateful = [layer.name for layer in layers if getattr(layer, "stateful", False)]
    if stateful:
        raise ValueError(
            f"Layer {stateful[0]!r} is stateful (stateful=True): its outputs depend on the state carried over "
            "from earlier batches, which a Laplace approximation cannot fix. Build the same model with "
            "stateful=False, copy the weights (new_model.set_weights(model.get_weights())) and pass that one."
        )


def check_one_output(outputs: Any) -> None:
    """Refuses several model outputs (a list, tuple or dict of heads): the likelihoods take one
    ``(batch, outputs)`` tensor. ``outputs`` are a functional model's ``model.outputs`` or what
    a subclassed model returned."""
    if isinstance(outputs, (list, tuple, dict)) and len(outputs) > 1:
        raise ValueError(
            f"The model has {len(outputs)} outputs, but laplace-tf needs one (batch, outputs) tensor: build "
            "a model of the head you want uncertainty for (keras.Model(model.inputs, model.outputs[0])), "
            "or join the heads with keras.layers.Concatenate()."
        )


def check_outputs_are_not_probabilities(outputs: np.ndarray, likelihood: Any) -> None:
    """Refuses classification outputs that are probabilities (every row in [0, 1] summing to 1)."""
    if likelihood != LikelihoodName.CLASSIFICATION or outputs.shape[-1] < 2 or len(outputs) < 2:
        return
    in_range = np.all((outputs >= 0) & (outputs <= 1))
    if in_range and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-4):
        raise ValueError(
            "The model's outputs are probabilities (each row is in [0, 1] and sums to 1), but laplace-tf "
            "needs logits: remove the final softmax from the model (and train with from_logits=True)."
        )


def declared_logit_count(model: Any) -> int | None:
    """``K`` if the model declares ``(batch, K)`` outputs computed by an affine layer (a ``Dense``
    or ``EinsumDense`` without activation): logits by construction, counted without a forward
    pass; else ``None`` (subclassed models, other output layers, several outputs)."""
    shape = getattr(model, "output_shape", None)
    if not isinstance(shape, tuple) or len(shape) != 2 or not isinstance(shape[-1], int):
        return None
    return shape[-1] if _affine_output(model) else None


def _affine_output(model: Any) -> bool:
    """Whether the layer that produces the model's output (looked into, if a model) is affine."""
    layer = _output_layer(model)
    if isinstance(layer, keras.Model):
        return _affine_output(layer)
    affine = type(layer) in (keras.layers.Dense, keras.layers.EinsumDense)  # a subclass may change `call`
    return affine and layer.activation is keras.activations.linear


def _final_squashing(model: Any) -> str | None:
    """``"softmax"``/``"sigmoid"`` if the layer that produces the model's output applies one."""
    layer = _output_layer(model)
    if isinstance(layer, keras.Model):
        return _final_squashing(layer)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax (a Softmax layer)"
    if type(layer).__name__ in ("Softmax", "Sigmoid"):  # keras.ops.softmax / sigmoid in a functional model
        return type(layer).__name__.lower()
    activation = getattr(layer, "activation", None)
    for name in ("softmax", "sigmoid"):
        if activation is getattr(keras.activations, name) or getattr(activation, "__name__", None) == name:
            return name
    return None


def _output_layer(model: Any) -> Any:
    """The layer whose output is the model's (single) output, if the model says."""
    try:
        outputs = tf.nest.flatten(model.outputs)
        return outputs[0]._keras_history.operation if len(outputs) == 1 else None
    except (AttributeError, ValueError, TypeError):
        layers = getattr(model, "layers", None) or []
        return layers[-1] if isinstance(model, keras.Sequential) and layers else None


def format_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
