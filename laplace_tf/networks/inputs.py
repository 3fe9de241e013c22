"""Model inputs of any structure Keras accepts: one array, a list or tuple, a dict, or nested.

A model with several inputs takes them as a list, a tuple or a dict (``{"image": ..., "meta":
...}``), possibly nested; every leaf is an array whose first axis runs over the same examples.
These helpers treat such a structure as one batch of inputs: they convert and validate it
(`as_input_arrays`), count its examples, slice it, cast its float leaves to the model's dtype
(integer leaves, such as token ids, stay integers), and describe it for ``tf.function``. The
`signature` of the inputs a Laplace was fitted on (per leaf: the example shape, float or
integer) is what `conform` checks later inputs against, naming the leaf that differs.

Example:
    ```python
    >>> x = {"tokens": np.zeros([8, 5], "int32"), "price": np.ones([8, 1])}
    >>> n_examples(as_input_arrays(x))
    8
    >>> take(x, slice(0, 2))["price"].shape
    (2, 1)
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from laplace_tf.networks.validation import check_finite

Inputs = Any  # an array or a nested list / tuple / dict of arrays


def as_input_arrays(x: Any, what: str = "x") -> Inputs:
    """``x`` as the same structure of NumPy arrays, checked: no scalars, one length, finite floats.

    A plain (nested) Python list of numbers is one array, as NumPy reads it, not a structure.
    """
    if _is_plain_values(x):
        x = as_array(x, what)
    leaves = tf.nest.flatten(x)
    if not leaves:
        raise ValueError(f"{what} is empty; pass an array, or a list or dict of arrays, one row per example.")
    names = _leaf_names(what, x)
    arrays = [as_array(leaf, name) for leaf, name in zip(leaves, names, strict=True)]
    if len({len(a) for a in arrays}) > 1:
        described = ", ".join(f"{name}: {len(a)}" for name, a in zip(names, arrays, strict=True))
        raise ValueError(f"The inputs in {what} have different numbers of examples ({described}); they must match.")
    for array, name in zip(arrays, names, strict=True):
        check_finite(array, name)
    return tf.nest.pack_sequence_as(x, arrays)


@dataclass(frozen=True)
class LeafSignature:
    """One input's example shape (``None`` on axes of any size) and whether it holds ``"float"``,
    ``"integer"`` or ``"text"`` data."""

    shape: tuple[int | None, ...]
    kind: str

    def __str__(self) -> str:
        return f"{self.shape} {self.kind}"


def signature(x: Inputs, model: keras.Model | None = None, leading_axes: int = 0) -> Any:
    """Per leaf of ``x``, its `LeafSignature`: what later inputs must match.

    An axis the ``model`` declares free (``keras.Input((None,))``: sequences of any length) is
    ``None`` there: later inputs may have any size on it. ``leading_axes``: axes of ``x``'s
    examples before the model's own (a reward model's pair axis).
    """
    fitted = tf.nest.map_structure(lambda a: LeafSignature(tuple(a.shape[1:]), _kind(a)), x)
    declared = declared_example_shapes(model)
    leaves = tf.nest.flatten(fitted)
    if declared is None or len(declared) != len(leaves):
        return fitted
    relaxed = [_relaxed(leaf, shape, leading_axes) for leaf, shape in zip(leaves, declared, strict=True)]
    return tf.nest.pack_sequence_as(fitted, relaxed)


def declared_example_shapes(model: keras.Model | None) -> list[tuple] | None:
    """The example shapes of the model's declared inputs (``None`` where free), in ``tf.nest``
    order; ``None`` for a model that declares none (subclassed)."""
    tensors = declared_inputs(model)
    return None if tensors is None else [tuple(t.shape[1:]) for t in tensors]


def _relaxed(leaf: LeafSignature, declared: tuple, leading_axes: int) -> LeafSignature:
    """``leaf`` with ``None`` on the axes ``declared`` leaves free, when their ranks agree."""
    if len(leaf.shape) != len(declared) + leading_axes:
        return leaf
    free = [False] * leading_axes + [size is None for size in declared]
    return LeafSignature(tuple(None if f else size for size, f in zip(leaf.shape, free, strict=True)), leaf.kind)


def signature_to_json(expected: Any) -> dict:
    """A signature as JSON-able data: the structure (leaves ``None``) and the leaves in order."""
    leaves = [{"shape": list(leaf.shape), "kind": leaf.kind} for leaf in tf.nest.flatten(expected)]
    return {"structure": tf.nest.map_structure(lambda _: None, expected), "leaves": leaves}


def signature_from_json(data: dict) -> Any:
    """The signature written by `signature_to_json`."""
    leaves = [LeafSignature(tuple(leaf["shape"]), leaf["kind"]) for leaf in data["leaves"]]
    if data["structure"] is None:
        return leaves[0]
    return tf.nest.pack_sequence_as(data["structure"], leaves)


def conform(x: Inputs, expected: Any, what: str = "x") -> Inputs:
    """``x`` checked against the ``signature`` the Laplace was fitted on, integers cast to float
    where floats were fitted; a clear error naming the leaf where they differ."""
    try:
        tf.nest.assert_same_structure(x, expected, check_types=False)
    except (ValueError, TypeError) as error:
        fitted = tf.nest.map_structure(str, expected)
        raise ValueError(
            f"{what} is structured as {describe(x)}, but the Laplace was fitted on inputs {fitted}; "
            "pass the inputs the model takes, in the same structure."
        ) from error
    conformed = []
    for leaf, fitted, name in zip(tf.nest.flatten(x), tf.nest.flatten(expected), _leaf_names(what, x), strict=True):
        if not _fits(tuple(leaf.shape[1:]), fitted.shape):
            one_example = _fits(tuple(leaf.shape), fitted.shape)
            raise ValueError(
                f"{name} has examples of shape {tuple(leaf.shape[1:])}, but the Laplace was fitted on "
                f"examples of shape {fitted.shape}; pass inputs of the shape the model takes"
                + (f" (one example needs a batch axis: {name}[None])." if one_example else ".")
            )
        if _kind(leaf) == "float" and fitted.kind == "integer":
            raise TypeError(f"{name} holds floats, but the model was fitted on integers there (token ids?).")
        if (_kind(leaf) == "text") != (fitted.kind == "text"):
            raise TypeError(f"{name} holds {_kind(leaf)}, but the model was fitted on {fitted.kind} there.")
        conformed.append(leaf.astype(np.float64) if fitted.kind == "float" and _kind(leaf) == "integer" else leaf)
    return tf.nest.pack_sequence_as(x, conformed)


def check_declared_inputs(x: Inputs, model: keras.Model, leading_axes: int = 0) -> None:
    """Refuses inputs the model's declared inputs cannot take, before Keras fails on them: a dict
    lacking inputs the model names (Keras says only that an output "is not connected"), text
    where the model takes numbers (or numbers where it takes text), or examples of another shape
    (which Keras's own call refuses, but the stateless call a fit runs would take: 5x5 images in a
    6x6 convolutional network with global pooling). A model that declares no inputs (subclassed)
    is not checked. ``leading_axes``: axes of ``x``'s examples before the model's own (a reward
    model's pair axis)."""
    declared = _declared(lambda: model.input)
    if isinstance(declared, dict) and isinstance(x, dict):
        missing = sorted(set(declared) - set(x))
        if missing:
            raise ValueError(
                f"x lacks the model's inputs {missing}: the model takes a dict with keys {sorted(declared)}, "
                f"x has keys {sorted(x)}."
            )
    tensors, leaves = declared_inputs(model) or [], tf.nest.flatten(x)
    if len(leaves) != len(tensors):
        return
    for leaf, tensor, name in zip(leaves, tensors, _leaf_names("x", x), strict=True):
        if (_kind(leaf) == "text") != (tensor.dtype == "string"):
            raise TypeError(f"{name} holds {_kind(leaf)}, but the model's input there takes {tensor.dtype}.")
        shape, declared_shape = tuple(leaf.shape[1 + leading_axes :]), tuple(tensor.shape[1:])
        if not _takes(shape, declared_shape):
            raise ValueError(
                f"{name} has examples of shape {shape}, but the model takes examples of shape {declared_shape} "
                "there (None: any size); pass inputs of that shape (resize or crop images, pad sequences)."
            )


def _takes(shape: tuple, declared: tuple) -> bool:
    """Whether a model declaring examples of shape ``declared`` takes examples of ``shape``, as Keras
    does: a trailing axis of size 1 may be missing or extra."""
    if len(shape) == len(declared) - 1 and declared[-1] == 1:
        shape = (*shape, 1)
    elif len(shape) == len(declared) + 1 and shape[-1] == 1:
        shape = shape[:-1]
    return _fits(shape, declared)


def declared_inputs(model: keras.Model | None) -> list | None:
    """The model's declared input tensors, flat in ``tf.nest`` order, or ``None`` if it declares
    none (a subclassed model)."""
    return _declared(lambda: model.inputs)


def _declared(read: Callable[[], Any]) -> Any:
    """A model's declared inputs (``model.input`` or ``model.inputs``), or ``None`` if it has none."""
    try:
        return read()
    except (AttributeError, TypeError, ValueError):
        return None


def _fits(shape: tuple, fitted: tuple) -> bool:
    """Whether an example shape matches a fitted one (``None``: any size)."""
    return len(shape) == len(fitted) and all(f is None or f == s for s, f in zip(shape, fitted, strict=True))


def n_examples(x: Inputs) -> int:
    """The number of examples (the first axis of every leaf)."""
    return int(tf.nest.flatten(x)[0].shape[0])


def take(x: Inputs, part: slice | np.ndarray) -> Inputs:
    """The examples ``part`` of every leaf."""
    return tf.nest.map_structure(lambda leaf: leaf[part], x)


def cast_inputs(x: Inputs, dtype: tf.DType) -> Inputs:
    """Tensors: float leaves in ``dtype``, integer and other leaves as they are."""
    return tf.nest.map_structure(lambda leaf: _cast_leaf(leaf, dtype), x)


def add_batch_axis(x: Inputs) -> Inputs:
    """One example's inputs as a batch of one (inside ``tf.vectorized_map``)."""
    return tf.nest.map_structure(lambda leaf: leaf[None], x)


def batch_spec(x: Inputs, free: list[tuple[int, ...]] | None = None) -> Any:
    """``tf.TensorSpec`` s of ``x`` with the batch axis left free, for a ``tf.function`` signature,
    and, per leaf (in ``tf.nest`` order), the example axes ``free`` lists (`free_example_axes`)."""
    leaves = tf.nest.flatten(x)
    free = free or [()] * len(leaves)
    specs = [
        tf.TensorSpec([None, *(None if axis in axes else size for axis, size in enumerate(t.shape[1:]))], t.dtype)
        for t, axes in zip(leaves, free, strict=True)
    ]
    return tf.nest.pack_sequence_as(x, specs)


def free_example_axes(x: Inputs, declared: list[tuple] | None) -> list[tuple[int, ...]]:
    """Per leaf of ``x`` (``tf.nest`` order), the axes of its examples (0: the first after the
    batch axis) that the model's ``declared`` example shapes (`declared_example_shapes`) leave
    free (``keras.Input((None,))``), matched from the last axis (a reward model's examples lead
    with the pair axis); none for a model that declares no inputs or more axes than a leaf has."""
    leaves = tf.nest.flatten(x)
    if declared is None or len(declared) != len(leaves):
        return [()] * len(leaves)
    free = []
    for leaf, shape in zip(leaves, declared, strict=True):
        leading = len(leaf.shape) - 1 - len(shape)
        free.append(tuple(leading + i for i, size in enumerate(shape) if size is None) if leading >= 0 else ())
    return free


def free_extent(x: Inputs, free: list[tuple[int, ...]]) -> int:
    """The largest size of ``x`` on the ``free`` axes (0 without free axes)."""
    sizes = [int(t.shape[1 + axis]) for t, axes in zip(tf.nest.flatten(x), free, strict=True) for axis in axes]
    return max(sizes, default=0)


def describe(x: Inputs) -> str:
    """Shapes and dtypes of the leaves, for messages: ``{'a': (8, 3) float32, ...}``."""
    return str(tf.nest.map_structure(lambda t: f"{tuple(t.shape)} {t.dtype}", x))


def _kind(array: np.ndarray) -> str:
    """``"float"``, ``"integer"`` (also booleans) or ``"text"``."""
    if array.dtype.kind in "SUO":
        return "text"
    return "float" if np.issubdtype(array.dtype, np.floating) else "integer"


def _cast_leaf(leaf: Any, dtype: tf.DType) -> tf.Tensor:
    tensor = tf.convert_to_tensor(leaf)
    return tf.cast(tensor, dtype) if tensor.dtype.is_floating and tensor.dtype != dtype else tensor


def as_array(leaf: Any, what: str) -> np.ndarray:
    """One array (NumPy or a tensor) as NumPy, with one row per example (not a scalar, not ragged):
    numbers, or text for a model that takes strings (``TextVectorization`` in the model)."""
    if isinstance(leaf, (tf.Tensor, tf.Variable)):
        leaf = leaf.numpy()
    try:
        array = np.asarray(leaf)
    except ValueError as error:  # NumPy refuses rows of different lengths
        raise ValueError(f"{what} has rows of different shapes (a ragged array); pad them to one shape.") from error
    if array.ndim == 0 and array.dtype == object:  # NumPy wraps what it cannot read: a generator, a model
        raise TypeError(
            f"{what} must be arrays (NumPy or tensors; one, or a list or dict of them), got "
            f"{type(leaf).__name__}. For data that streams, pass a batched tf.data.Dataset instead."
        )
    if array.ndim == 0:
        raise ValueError(f"{what} is a scalar; pass an array with one row per example.")
    if array.dtype == object and not _holds_text(array):
        raise ValueError(f"{what} has rows of different shapes (a ragged array); pad them to one shape.")
    if array.dtype.kind not in "biufSUO":
        raise TypeError(f"{what} must hold numbers or text, got an array of {array.dtype} ({array.dtype.kind!r} kind).")
    return array


def _holds_text(array: np.ndarray) -> bool:
    """Whether an object array holds only ``str`` or ``bytes`` (text, as pandas keeps it)."""
    return all(isinstance(item, (str, bytes)) for item in array.reshape(-1))


def _leaf_names(what: str, x: Any) -> list[str]:
    """Per leaf, in ``tf.nest`` order: ``x``, or ``x['price']`` / ``x[1]`` in a structure."""
    if not tf.nest.is_nested(x):
        return [what]
    return [what + "".join(f"[{part!r}]" for part in path) for path, _ in keras.tree.flatten_with_path(x)]


def _is_plain_values(x: Any) -> bool:
    """Whether ``x`` is a (nested) list of Python numbers or strings, which NumPy reads as one array."""
    if not isinstance(x, (list, tuple)) or not x:
        return False
    return all(isinstance(leaf, (int, float, bool, np.number, str, bytes)) for leaf in tf.nest.flatten(x))
