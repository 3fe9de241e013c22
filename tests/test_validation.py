"""Every bad input gets a clear error before any work is done."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import N_CLASSES, make_mlp

import laplace_tf as lt


@pytest.fixture
def model():
    return make_mlp(4, N_CLASSES)


def _data(n=10):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 4)), rng.integers(0, N_CLASSES, size=n)


@pytest.mark.parametrize(
    ("option", "value"),
    [("hessian_structure", "dense"), ("curvature", "fisher"), ("subset_of_weights", "first_layer")],
)
def test_unknown_options_list_the_valid_ones(model, option, value):
    with pytest.raises(ValueError, match=f"{option}='{value}' is not valid; choose one of"):
        lt.Laplace(model, "classification", **{option: value})


def test_unknown_likelihood_and_prediction_options(model):
    with pytest.raises(ValueError, match="'classification', 'binary'"):
        lt.Laplace(model, "poisson", subset_of_weights="all", hessian_structure="full")
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        _data(), verbose=False
    )
    with pytest.raises(ValueError, match="pred_type='sampled'"):
        la.predict(_data()[0], pred_type="sampled")
    with pytest.raises(ValueError, match=r"link_approx='laplace'.*'probit', 'mc', 'bridge', 'bridge_norm'"):
        la.predict(_data()[0], link_approx="laplace")
    with pytest.raises(ValueError, match="method='grid'"):
        la.optimize_prior_precision(method="grid")
    with pytest.raises(ValueError, match="prior_structure='blockwise'"):
        la.optimize_prior_precision(prior_structure="blockwise")


def test_labels_out_of_range_or_of_wrong_shape(model):
    x, y = _data()
    y[3] = N_CLASSES
    with pytest.raises(ValueError, match=r"labels\) must be in \[0, 3\).*\[3\].*\[3\]"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, y), verbose=False
        )
    with pytest.raises(ValueError, match="shape"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.zeros((10, 2, 2))), verbose=False
        )
    with pytest.raises(ValueError, match="whole numbers"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.full(10, 0.5)), verbose=False
        )
    with pytest.raises(ValueError, match="0 or 1"):
        lt.Laplace(make_mlp(4, 1), "binary", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.full(10, 2)), verbose=False
        )
    with pytest.raises(ValueError, match="one output"):
        lt.Laplace(model, "binary", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.zeros(10)), verbose=False
        )
    with pytest.raises(ValueError, match=r"model has 3 output\(s\)"):
        lt.Laplace(model, "regression", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.zeros((10, 2))), verbose=False
        )


def test_x_and_y_of_different_lengths(model):
    x, y = _data()
    with pytest.raises(ValueError, match="x has 10 examples but y has 9"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, y[:9]), verbose=False
        )


def test_nan_or_inf_in_data_or_weights(model):
    x, y = _data()
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(first bad rows: \[4\]\)"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, y), verbose=False
        )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    with pytest.raises(ValueError, match=r"batch 1 of the dataset"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            dataset, verbose=False
        )
    x, y = _data()
    with pytest.raises(ValueError, match="NaN or inf"):
        lt.Laplace(make_mlp(4, 1), "regression", subset_of_weights="all", hessian_structure="full").fit(
            (x, np.full(10, np.inf)), verbose=False
        )
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
    model.layers[0].kernel.assign(np.full(model.layers[0].kernel.shape, np.nan))
    with pytest.raises(ValueError, match=r"weights contain NaN or inf.*kernel"):
        la.fit((x, y), verbose=False)


def test_unfitted_laplace(model):
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
    for call in (
        lambda: la.predict(_data()[0]),
        la.log_marginal_likelihood,
        lambda: la.sample(3),
        lambda: la.posterior,
    ):
        with pytest.raises(lt.NotFittedError, match=r"call la.fit\(\(x, y\)\) first"):
            call()


def test_full_structure_that_would_not_fit_in_memory(model):
    with pytest.raises(MemoryError, match=r"needs about 43.3 KiB.*'diag' or 'kron'.*'last_layer'"):
        lt.Laplace(model, "classification", memory_limit=5000, subset_of_weights="all", hessian_structure="full")
    lt.Laplace(
        model, "classification", hessian_structure="diag", memory_limit=5000, subset_of_weights="all"
    )  # diag is fine


def test_bad_hyperparameters(model):
    with pytest.raises(ValueError, match="positive"):
        lt.Laplace(model, "classification", prior_precision=-1.0, subset_of_weights="all", hessian_structure="full")
    with pytest.raises(ValueError, match=r"one value per trainable variable \(4,\) or one per parameter \(43,\)"):
        lt.Laplace(
            model, "classification", prior_precision=np.ones(7), subset_of_weights="all", hessian_structure="full"
        )
    with pytest.raises(ValueError, match="likelihood='regression' only"):
        lt.Laplace(model, "classification", sigma_noise=2.0, subset_of_weights="all", hessian_structure="full")
    with pytest.raises(ValueError, match="prior_mean"):
        lt.Laplace(model, "classification", prior_mean=np.zeros(5), subset_of_weights="all", hessian_structure="full")


def test_softmax_output_layer_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(ValueError, match="needs logits"):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")


def test_unbuilt_model_and_bad_data_types():
    with pytest.raises(ValueError, match="build it first"):
        lt.Laplace(
            keras.Sequential([keras.layers.Dense(3)]),
            "classification",
            subset_of_weights="all",
            hessian_structure="full",
        )
    with pytest.raises(TypeError, match=r"keras.Model"):
        lt.Laplace(lambda x: x, "classification", subset_of_weights="all", hessian_structure="full")
    with pytest.raises(TypeError, match=r"tuple \(x, y\)"):
        lt.Laplace(make_mlp(4, N_CLASSES), "classification", subset_of_weights="all", hessian_structure="full").fit(
            {"x": 1}, verbose=False
        )
    with pytest.raises(ValueError, match="batch_size"):
        lt.Laplace(make_mlp(4, N_CLASSES), "classification", subset_of_weights="all", hessian_structure="full").fit(
            _data(), batch_size=0, verbose=False
        )
