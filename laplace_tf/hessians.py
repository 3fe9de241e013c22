r"""Exact second derivatives of any scalar TensorFlow function by nested gradient tapes.

For a scalar function $f$ of one tensor or a list of tensors
$x = (x_1, \dots, x_m)$, let $\theta = \mathrm{vec}(x_1) \oplus \dots \oplus
\mathrm{vec}(x_m)$ be their flattened concatenation of length $n$. This module computes

* [`hessian`][laplace_tf.hessian]: $H = \nabla^2_\theta f \in \mathbb{R}^{n \times n}$,
* [`hessian_diagonal`][laplace_tf.hessian_diagonal]: $\operatorname{diag}(H) \in \mathbb{R}^n$, exactly,
  without holding more than a bounded block of $H$ at a time,
* [`hvp`][laplace_tf.hvp]: $H v \in \mathbb{R}^n$.

``f`` is always called with ``x`` as given (the tensor, the variable, or the list), so it may
use its argument or close over the variables. An inner tape takes the gradient; an outer tape
takes the Jacobian of that gradient, vectorised with ``pfor`` (``vectorize=False`` loops instead,
for functions ``pfor`` cannot vectorise, such as recurrent Keras layers; see
`vectorizing`). Called eagerly, the computation
is compiled with ``tf.function`` once per function and reused; called inside a
``tf.function`` it is inlined into the caller's graph.

Example:
    ```python
    >>> import tensorflow as tf, laplace_tf as lt
    >>> x = tf.constant([1.0, 2.0])
    >>> lt.hessian(lambda x: x[0] ** 2 + 3 * x[0] * x[1] + x[1] ** 2, x).numpy()
    array([[2., 3.],
           [3., 2.]], dtype=float32)
    ```
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from laplace_tf.compiled import separate_tf_function
from laplace_tf.vectorizing import map_examples

Tensorish = tf.Tensor | tf.Variable | Any
ScalarFn = Callable[[Any], tf.Tensor]

UNCONNECTED_OPTIONS = ("raise", "zero")
_MAX_DIAGONAL_BLOCK_ELEMENTS = 2**24
_compiled_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hessian(
    f: ScalarFn, x: Tensorish | Sequence[Tensorish], *, unconnected: str = "raise", vectorize: bool = True
) -> tf.Tensor:
    """The Hessian of a scalar function over the flattened concatenation of its inputs.

    Args:
      f: a function of ``x`` returning a scalar (or one-element) tensor.
      x: a float tensor or variable, or a list of them, of any shapes.
      unconnected: ``"raise"`` (default) makes an input that ``f`` does not depend on a
        ``ValueError`` naming it; ``"zero"`` gives it zero rows and columns.
      vectorize: ``False`` computes the rows one by one instead of with ``pfor`` (for functions
        with while loops ``pfor`` cannot vectorise, such as recurrent layers).

    Returns:
      An ``(n, n)`` tensor, ``n`` the total number of elements of ``x``. Use
      [`split_hessian`][laplace_tf.split_hessian] to get the blocks per input back.
    """
    _check_unconnected_option(unconnected)
    return _run(_hessian_graph, f, x, unconnected, vectorize)


def hessian_diagonal(
    f: ScalarFn, x: Tensorish | Sequence[Tensorish], *, unconnected: str = "raise", vectorize: bool = True
) -> tf.Tensor:
    """The exact diagonal of the Hessian, of shape ``(n,)``.

    Computed as Hessian-vector products with the unit vectors, vectorised in blocks so that
    memory stays bounded (at most 2**24 elements of ``H`` at a time) for any ``n``;
    ``vectorize=False`` as in [`hessian`][laplace_tf.hessian].
    """
    _check_unconnected_option(unconnected)
    return _run(_hessian_diagonal_graph, f, x, unconnected, vectorize)


def hvp(
    f: ScalarFn,
    x: Tensorish | Sequence[Tensorish],
    v: Tensorish | Sequence[Tensorish],
    *,
    unconnected: str = "raise",
) -> tf.Tensor:
    """The Hessian-vector product $H v$ of shape ``(n,)``, without forming ``H``.

    Args:
      f, x, unconnected: as in [`hessian`][laplace_tf.hessian].
      v: a flat vector of length ``n``, or tensors of the same shapes as ``x``.
    """
    _check_unconnected_option(unconnected)
    xs = _as_list(x)
    v_flat = _flatten_like(v, xs)
    if tf.executing_eagerly():
        return _compiled(f, _hvp_graph, unconnected)(x, v_flat)
    return _hvp_graph(f, x, v_flat, unconnected)


def split_hessian(h: tf.Tensor, x: Tensorish | Sequence[Tensorish]) -> list[list[tf.Tensor]]:
    """Splits a flat ``(n, n)`` Hessian into blocks ``[i][j]`` of shape ``x_i.shape + x_j.shape``.

    Example:
        ```python
        >>> a, b = tf.ones([2]), tf.ones([3, 2])
        >>> blocks = split_hessian(tf.zeros([8, 8]), [a, b])
        >>> blocks[0][1].shape
        TensorShape([2, 3, 2])
        ```
    """
    xs = _as_list(x)
    sizes = [_size(t) for t in xs]
    shapes = [list(t.shape) for t in xs]
    rows = tf.split(h, sizes, axis=0)
    return [
        [tf.reshape(block, shapes[i] + shapes[j]) for j, block in enumerate(tf.split(row, sizes, axis=1))]
        for i, row in enumerate(rows)
    ]


def _run(graph_fn: Callable, f: ScalarFn, x: Any, unconnected: str, vectorize: bool) -> tf.Tensor:
    _as_list(x)  # validates x before anything is traced
    if tf.executing_eagerly():
        return _compiled(f, graph_fn, unconnected, vectorize)(x)
    return graph_fn(f, x, unconnected, vectorize)


def _compiled(f: ScalarFn, graph_fn: Callable, unconnected: str, *options: Any) -> Callable:
    """A ``tf.function`` of ``graph_fn`` for ``f``, cached while ``f`` lives."""

    def build() -> Callable:
        return separate_tf_function(lambda *args: graph_fn(f, *args, unconnected, *options), reduce_retracing=True)

    try:
        per_function = _compiled_cache.setdefault(f, {})
    except TypeError:  # f cannot be weakly referenced: compile without caching
        return build()
    key = (graph_fn.__name__, unconnected, *options)
    if key not in per_function:
        per_function[key] = build()
    return per_function[key]


def _gradient_vector(f: ScalarFn, x: Any, xs: list, unconnected: str) -> tf.Tensor:
    """The flat gradient of ``f`` at ``x``, computed on a tape (record it to differentiate)."""
    with tf.GradientTape() as tape:
        tape.watch(xs)
        value = _as_scalar(f(x))
    grads = tape.gradient(value, xs, unconnected_gradients=tf.UnconnectedGradients.NONE)
    grads = _resolve_unconnected(grads, xs, unconnected)
    return tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)


def _hessian_graph(f: ScalarFn, x: Any, unconnected: str, vectorize: bool) -> tf.Tensor:
    xs = _as_list(x)
    with tf.GradientTape() as outer:
        outer.watch(xs)
        gradient = _gradient_vector(f, x, xs, unconnected)
    blocks = outer.jacobian(
        gradient, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO, experimental_use_pfor=vectorize
    )
    n = sum(_size(t) for t in xs)
    return tf.concat([tf.reshape(block, [n, -1]) for block in blocks], axis=1)


def _hvp_graph(f: ScalarFn, x: Any, v_flat: tf.Tensor, unconnected: str) -> tf.Tensor:
    xs = _as_list(x)
    with tf.GradientTape() as outer:
        outer.watch(xs)
        gradient = _gradient_vector(f, x, xs, unconnected)
        directional = tf.reduce_sum(gradient * tf.cast(v_flat, gradient.dtype))
    products = outer.gradient(directional, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.concat([tf.reshape(p, [-1]) for p in products], axis=0)


def _hessian_diagonal_graph(f: ScalarFn, x: Any, unconnected: str, vectorize: bool) -> tf.Tensor:
    xs = _as_list(x)
    n = sum(_size(t) for t in xs)
    block = max(1, min(n, _MAX_DIAGONAL_BLOCK_ELEMENTS // max(n, 1)))
    dtype = xs[0].dtype
    pieces = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        units = tf.one_hot(tf.range(start, stop), n, dtype=dtype)
        signature = tf.TensorSpec([n], dtype)  # a Hessian-vector product, flattened
        products = map_examples(lambda u: _hvp_graph(f, x, u, unconnected), units, vectorize, signature)
        pieces.append(tf.linalg.diag_part(products[:, start:stop]))
    return tf.concat(pieces, axis=0)


def _as_list(x: Any) -> list:
    """The inputs as a list of float tensors/variables (Keras variables are unwrapped)."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if not items:
        raise ValueError("x is empty: pass a tensor, a variable, or a non-empty list of them.")
    out = []
    for i, item in enumerate(items):
        item = getattr(item, "value", item) if _is_keras_variable(item) else item
        if not isinstance(item, (tf.Tensor, tf.Variable)):
            item = tf.convert_to_tensor(item)
        if not item.dtype.is_floating:
            raise ValueError(f"x[{i}] has dtype {item.dtype.name}; Hessians need floating-point inputs.")
        if not item.shape.is_fully_defined():
            raise ValueError(f"x[{i}] has shape {item.shape}, which is not fully known.")
        out.append(item)
    return out


def _is_keras_variable(item: Any) -> bool:
    return type(item).__module__.startswith("keras") and hasattr(item, "value")


def _size(t: Any) -> int:
    return int(np.prod(t.shape.as_list(), dtype=np.int64))


def _as_scalar(value: Any) -> tf.Tensor:
    value = tf.convert_to_tensor(value)
    if value.shape.num_elements() != 1:
        raise ValueError(
            f"f must return a scalar, but returned a tensor of shape {value.shape}; "
            "reduce it (e.g. tf.reduce_sum) or differentiate each output separately."
        )
    return tf.reshape(value, [])


def _resolve_unconnected(grads: list, xs: list, unconnected: str) -> list:
    resolved = []
    for i, (g, t) in enumerate(zip(grads, xs, strict=True)):
        if g is None:
            if unconnected == "raise":
                name = getattr(t, "name", None) if isinstance(t, tf.Variable) else None
                label = f"variable {name!r}" if name else f"x[{i}] (shape {t.shape.as_list()})"
                raise ValueError(
                    f"f does not depend on {label}: its Hessian rows would be undefined. "
                    "Remove it from x, or pass unconnected='zero' to get zeros."
                )
            g = tf.zeros_like(t)
        elif isinstance(g, tf.IndexedSlices):
            g = tf.convert_to_tensor(g)
        resolved.append(g)
    return resolved


def _flatten_like(v: Any, xs: list) -> tf.Tensor:
    n = sum(_size(t) for t in xs)
    parts = v if isinstance(v, (list, tuple)) else [v]
    flat = tf.concat([tf.reshape(tf.convert_to_tensor(p, dtype=xs[0].dtype), [-1]) for p in parts], 0)
    if flat.shape[0] != n:
        raise ValueError(f"v has {flat.shape[0]} elements but x has {n}; they must match.")
    return flat


def _check_unconnected_option(unconnected: str) -> None:
    if unconnected not in UNCONNECTED_OPTIONS:
        raise ValueError(f"unconnected={unconnected!r} is not valid; choose one of 'raise', 'zero'.")
