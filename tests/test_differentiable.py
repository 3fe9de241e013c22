"""Predictives are differentiable in the inputs (Bayesian optimisation, continual learning):
gradients under a tf.GradientTape against central finite differences, in float64."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_mlp

import laplace_tf as lt

STEP = 1e-6


def finite_difference_jacobian(fn, x: np.ndarray) -> np.ndarray:
    """d fn(x) / d x, shaped ``fn(x).shape + x.shape``, by central differences."""
    columns = []
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = STEP
        columns.append((fn(x + step) - fn(x - step)) / (2 * STEP))
    return np.moveaxis(np.stack(columns), 0, -1).reshape(*np.shape(fn(x)), *x.shape)


def tape_jacobian(fn, x: np.ndarray) -> np.ndarray:
    variable = tf.Variable(x)
    with tf.GradientTape(persistent=True) as tape:
        value = fn(variable)
    return tape.jacobian(value, variable, experimental_use_pfor=False).numpy()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3))
    return x, rng.integers(0, 3, size=30), np.sin(x[:, :2]) + 0.1 * rng.normal(size=(30, 2))


@pytest.mark.parametrize(
    ("structure", "subset"), [("full", "all"), ("kron", "all"), ("diag", "all"), ("kron", "last_layer")]
)
def test_regression_mean_and_variance(data, structure, subset):
    x, _, y = data
    la = lt.Laplace(make_mlp(3, 2), "regression", hessian_structure=structure, subset_of_weights=subset)
    la.fit((x, y), verbose=False)
    points = x[:3]
    for part in (0, 1):  # the mean, then the variance

        def predict(inputs, part=part):
            return la.predict(inputs, verbose=False)[part]

        np.testing.assert_allclose(
            tape_jacobian(predict, points),
            finite_difference_jacobian(lambda a, predict=predict: predict(a).numpy(), points),
            rtol=1e-6,
            atol=1e-9,
        )


@pytest.mark.parametrize(
    ("structure", "options"),
    [
        ("kron", {"link_approx": "probit"}),
        ("full", {"link_approx": "mc", "n_samples": 20, "seed": 1}),
        ("diag", {"link_approx": "bridge"}),
        ("diag", {"pred_type": "nn", "n_samples": 6, "seed": 3}),
    ],
)
def test_classification_probabilities(data, structure, options):
    x, labels, _ = data
    la = lt.Laplace(make_mlp(3, 3), "classification", hessian_structure=structure, subset_of_weights="all").fit(
        (x, labels), verbose=False
    )
    points = x[:2]

    def predict(inputs):
        return la.predict(inputs, verbose=False, **options)

    np.testing.assert_allclose(
        tape_jacobian(predict, points),
        finite_difference_jacobian(lambda a: predict(a).numpy(), points),
        rtol=1e-6,
        atol=1e-9,
    )


def test_numpy_inputs_still_give_numpy_backed_predictions(data):
    """Only tensors the user passes stay tensors; arrays are validated and used as before."""
    x, labels, _ = data
    la = lt.Laplace(make_mlp(3, 3), "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, labels), verbose=False
    )
    np.testing.assert_allclose(la.predict(x[:4]), la.predict(tf.constant(x[:4])), rtol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        la.predict(tf.constant(np.full((2, 3), np.nan)))
