"""lt.hessian, hessian_diagonal, hvp: textbook cases, finite differences, tf.hessians."""

import importlib

import numpy as np
import pytest
import tensorflow as tf

import laplace_tf as lt


@pytest.mark.parametrize(
    ("f", "x", "expected"),
    [
        (lambda x: x**2 + 2 * x + 1, tf.constant(3.0), [[2.0]]),
        (lambda x: x[0] ** 2 + x[1] ** 2 + x[0] * x[1], tf.constant([1.0, -2.0]), [[2, 1], [1, 2]]),
        (lambda x: x[0] ** 2 + 3 * x[0] * x[1] + x[1] ** 2, tf.constant([0.5, 4.0]), [[2, 3], [3, 2]]),
    ],
)
def test_textbook_hessians(f, x, expected):
    np.testing.assert_allclose(lt.hessian(f, x), expected, rtol=1e-6)
    np.testing.assert_allclose(lt.hessian_diagonal(f, x), np.diag(expected), rtol=1e-6)


def _smooth(xs):
    a, b = xs
    return tf.reduce_sum(tf.sin(a) * tf.reduce_sum(b**2)) + tf.reduce_sum(tf.exp(0.3 * a[:, None] * b[None, :, 0]))


def _finite_difference_hessian(f, xs, eps=1e-4):
    """Second-order central differences of f itself (no gradients involved)."""
    flat = np.concatenate([np.ravel(x) for x in xs])
    shapes = [x.shape for x in xs]

    def unflat(v):
        out, i = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(tf.constant(v[i : i + n].reshape(s)))
            i += n
        return out

    n = flat.size
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(n):

            def value(di, dj, i=i, j=j):
                v = flat.copy()
                v[i] += di
                v[j] += dj
                return float(f(unflat(v)))

            h[i, j] = (value(eps, eps) - value(eps, -eps) - value(-eps, eps) + value(-eps, -eps)) / (4 * eps**2)
    return h


def test_matches_finite_differences_for_list_of_tensors():
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.normal(size=3)), tf.constant(rng.normal(size=(2, 2)))]
    expected = _finite_difference_hessian(_smooth, [x.numpy() for x in xs])
    h = lt.hessian(_smooth, xs)
    assert h.shape == (7, 7) and h.dtype == tf.float64
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lt.hessian_diagonal(_smooth, xs), np.diag(expected), rtol=1e-5, atol=1e-6)
    v = rng.normal(size=7)
    np.testing.assert_allclose(lt.hvp(_smooth, xs, v), expected @ v, rtol=1e-5, atol=1e-6)


def test_agrees_with_tf_hessians_inside_tf_function():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(3, 2)))

    def f(x):
        return tf.reduce_sum(tf.tanh(x) ** 3) + tf.reduce_prod(x)

    @tf.function
    def both(x):
        return lt.hessian(f, x), tf.hessians(f(x), x)[0]

    ours, reference = both(x)
    np.testing.assert_allclose(ours, tf.reshape(reference, [6, 6]), rtol=1e-10)


def test_variables_closed_over_and_blocks():
    a = tf.Variable([1.0, 2.0])
    b = tf.Variable([[3.0]])

    def f(_):
        return a[0] ** 2 * b[0, 0] + a[1] ** 3

    h = lt.hessian(f, [a, b])
    expected = np.array([[2 * 3.0, 0, 2 * 1.0], [0, 6 * 2.0, 0], [2 * 1.0, 0, 0]])
    np.testing.assert_allclose(h, expected)
    blocks = lt.split_hessian(h, [a, b])
    assert blocks[0][1].shape == (2, 1, 1)
    np.testing.assert_allclose(np.ravel(blocks[0][1]), [2.0, 0.0])


def test_hvp_accepts_structured_vectors():
    a, b = tf.constant([1.0, 2.0]), tf.constant([3.0])

    def f(xs):
        return tf.reduce_sum(xs[0] ** 2) * xs[1][0]

    h = lt.hessian(f, [a, b]).numpy()
    v = [tf.constant([1.0, -1.0]), tf.constant([2.0])]
    np.testing.assert_allclose(lt.hvp(f, [a, b], v), h @ np.array([1.0, -1.0, 2.0]))


def test_unconnected_variable_is_named_or_zero():
    used, unused = tf.Variable([1.0, 2.0]), tf.Variable([5.0], name="forgotten")

    def f(xs):
        return tf.reduce_sum(xs[0] ** 2)

    with pytest.raises(ValueError, match="forgotten"):
        lt.hessian(f, [used, unused])
    h = lt.hessian(f, [used, unused], unconnected="zero")
    np.testing.assert_allclose(h, np.diag([2.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="unconnected="):
        lt.hessian(f, [used], unconnected="ignore")


def test_non_scalar_function_is_an_error():
    with pytest.raises(ValueError, match="must return a scalar"):
        lt.hessian(lambda x: x**2, tf.constant([1.0, 2.0]))


def test_integer_input_is_an_error():
    with pytest.raises(ValueError, match="floating-point"):
        lt.hessian(lambda x: x, tf.constant([1, 2]))


def test_linear_function_has_zero_hessian():
    np.testing.assert_array_equal(lt.hessian(lambda x: tf.reduce_sum(3.0 * x), tf.ones([3])), np.zeros((3, 3)))


def test_diagonal_in_blocks_equals_full_diagonal(monkeypatch):
    hessian_module = importlib.import_module("laplace_tf.hessians")  # lt.hessian is the function
    monkeypatch.setattr(hessian_module, "_MAX_DIAGONAL_BLOCK_ELEMENTS", 20)  # forces blocks of 2

    def f(x):
        return tf.reduce_sum(tf.sin(x) * tf.reduce_sum(x) ** 2)

    x = tf.constant(np.linspace(-1, 1, 9))
    np.testing.assert_allclose(hessian_module.hessian_diagonal(f, x), np.diag(lt.hessian(f, x)), rtol=1e-12)
