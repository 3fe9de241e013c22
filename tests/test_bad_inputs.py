"""Bad input at every public entry point: the exception type, and a message that names the
offending argument (and, where it helps, says what to do). Never a raw TensorFlow error, a NaN or a
traceback from the package's insides."""

from __future__ import annotations

import io
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import make_mlp

import laplace_tf as lt

tfd = tfp.distributions
RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 4))
Y = RNG.integers(0, 3, size=20)
Y_REGRESSION = RNG.normal(size=(20, 2))


@pytest.fixture(scope="module")
def fitted():
    model = make_mlp(4, 3)
    la = lt.Laplace(model, "classification", hessian_structure="diag", subset_of_weights="all").fit(
        (X, Y), verbose=False
    )
    la.predict(X, verbose=False)  # one good call first: later bad calls must not reach a compiled function
    regression = lt.Laplace(
        make_mlp(4, 2, seed=1), "regression", subset_of_weights="all", hessian_structure="full"
    ).fit((X, Y_REGRESSION), verbose=False)
    return {"la": la, "model": model, "regression": regression}


def _laplace(**options):
    defaults = {"subset_of_weights": "all", "hessian_structure": "full"}
    return lambda c: lt.Laplace(c["model"], options.pop("likelihood", "classification"), **{**defaults, **options})


def _fit(data, **options):
    return lambda c: lt.Laplace(c["model"], "classification", subset_of_weights="all", hessian_structure="full").fit(
        data, verbose=False, **options
    )


def _unbatched():
    return tf.data.Dataset.from_tensor_slices((X, Y))


def _nan_hidden_weight(c):
    model = make_mlp(4, 3, seed=5)
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 0, np.nan, kernel.numpy()))
    return lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="full").fit(
        (X, Y), verbose=False
    )


def _two_inputs():
    """A Laplace of a model taking a dict of two named inputs."""
    a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
    outputs = keras.layers.Dense(3)(keras.layers.Concatenate()([a, b]))
    return lt.Laplace(
        keras.Model({"a": a, "b": b}, outputs), "classification", subset_of_weights="all", hessian_structure="full"
    )


def _tagger():
    """A Laplace of a sequence tagger: outputs (batch, steps, classes)."""
    model = keras.Sequential([keras.Input((4, 1)), keras.layers.Dense(3)])
    return lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")


def _stateful_lstm():
    """A Laplace of a model with a stateful LSTM (its outputs depend on earlier batches)."""
    model = keras.Sequential([keras.Input(batch_shape=(8, 5, 2)), keras.layers.LSTM(3, stateful=True)])
    return lt.Laplace(
        keras.Sequential([model, keras.layers.Dense(3)]),
        "classification",
        subset_of_weights="all",
        hessian_structure="full",
    )


def _pooled_cnn():
    """Global pooling takes any image size, so nothing but the declared input refuses 5x5 images."""
    inputs = keras.Input((6, 6, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    return lt.Laplace(keras.Model(inputs, keras.layers.Dense(3)(pooled)), "classification")


def _two_heads(subclassed: bool):
    """A model with two output heads, functional or subclassed (returning a tuple)."""
    if not subclassed:
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(5)(inputs)
        return keras.Model(inputs, [keras.layers.Dense(3)(hidden), keras.layers.Dense(3)(hidden)])

    class TwoHeads(keras.Model):
        def __init__(self):
            super().__init__()
            self.left, self.right = keras.layers.Dense(3), keras.layers.Dense(3)

        def call(self, x):
            return self.left(x), self.right(x)

    model = TwoHeads()
    model(X[:1])
    return model


def _normal_model():
    return tfd.JointDistributionNamed({"mu": tfd.Normal(0.0, 1.0), "y": lambda mu: tfd.Sample(tfd.Normal(mu, 1.0), 5)})


def _file(tmp, name, write):
    path = tmp / name
    write(path)
    return path


CONSTRUCTOR = [
    (
        "model_not_keras",
        lambda c: lt.Laplace("model", "classification", subset_of_weights="all", hessian_structure="full"),
        TypeError,
        "model",
    ),
    ("likelihood_unknown", _laplace(likelihood="poisson"), ValueError, "likelihood"),
    ("likelihood_not_string", _laplace(likelihood=3), (TypeError, ValueError), "likelihood"),
    ("subset_unknown", _laplace(subset_of_weights="first_layer"), ValueError, "subset_of_weights"),
    ("subset_pattern_matches_nothing", _laplace(subset_of_weights=["conv/*"]), ValueError, "subset_of_weights"),
    ("subset_mask_wrong_shape", _laplace(subset_of_weights=[np.ones(3, bool), None, None, None]), ValueError, "mask"),
    ("subset_masks_wrong_count", _laplace(subset_of_weights=[None, None]), ValueError, "mask"),
    ("structure_unknown", _laplace(hessian_structure="dense"), ValueError, "hessian_structure"),
    ("curvature_unknown", _laplace(curvature="fisher"), ValueError, "curvature"),
    ("prior_string", _laplace(prior_precision="1.0"), TypeError, "prior_precision"),
    ("prior_none", _laplace(prior_precision=None), TypeError, "prior_precision"),
    ("prior_inf", _laplace(prior_precision=np.inf), ValueError, "prior_precision"),
    ("prior_nan", _laplace(prior_precision=np.nan), ValueError, "prior_precision"),
    ("prior_zero", _laplace(prior_precision=0.0), ValueError, "prior_precision"),
    ("prior_negative", _laplace(prior_precision=-1.0), ValueError, "prior_precision"),
    ("prior_wrong_length", _laplace(prior_precision=np.ones(7)), ValueError, "prior_precision"),
    ("prior_matrix", _laplace(prior_precision=np.ones((2, 2))), ValueError, "prior_precision"),
    ("prior_mean_nan", _laplace(prior_mean=np.nan), ValueError, "prior_mean"),
    ("prior_mean_wrong_length", _laplace(prior_mean=np.zeros(5)), ValueError, "prior_mean"),
    ("prior_mean_string", _laplace(prior_mean="zero"), TypeError, "prior_mean"),
    ("sigma_zero", _laplace(likelihood="regression", sigma_noise=0.0), ValueError, "sigma_noise"),
    ("sigma_inf", _laplace(likelihood="regression", sigma_noise=np.inf), ValueError, "sigma_noise"),
    ("sigma_string", _laplace(likelihood="regression", sigma_noise="1"), TypeError, "sigma_noise"),
    ("sigma_for_classification", _laplace(sigma_noise=2.0), ValueError, "sigma_noise"),
    ("temperature_zero", _laplace(temperature=0), ValueError, "temperature"),
    ("temperature_nan", _laplace(temperature=np.nan), ValueError, "temperature"),
    ("temperature_list", _laplace(temperature=[1.0]), TypeError, "temperature"),
    ("memory_limit_negative", _laplace(memory_limit=-5), ValueError, "memory_limit"),
    ("memory_limit_string", _laplace(memory_limit="8GB"), TypeError, "memory_limit"),
    ("memory_too_small_full", _laplace(memory_limit=100), MemoryError, "memory_limit"),
    ("stochastic_string", _laplace(stochastic="yes"), TypeError, "stochastic"),
    ("stochastic_with_full", _laplace(stochastic=True), ValueError, "stochastic"),
    ("num_samples_zero", _laplace(hessian_structure="kron", stochastic=True, num_samples=0), ValueError, "num_samples"),
    ("num_samples_float", _laplace(num_samples=1.5), TypeError, "num_samples"),
    ("rank_zero", _laplace(hessian_structure="lowrank", rank=0), ValueError, "rank"),
    ("rank_too_large", _laplace(hessian_structure="lowrank", rank=10_000), ValueError, "rank"),
    ("seed_float", _laplace(seed=1.5), TypeError, "seed"),
    ("seed_string", _laplace(seed="s"), TypeError, "seed"),
    ("strategy_wrong_type", _laplace(strategy="mirrored"), TypeError, "strategy"),
    ("kron_with_exact_hessian", _laplace(hessian_structure="kron", curvature="hessian"), ValueError, "curvature"),
    ("lowrank_with_ef", _laplace(hessian_structure="lowrank", curvature="ef"), ValueError, "curvature"),
    (
        "model_two_outputs",
        lambda c: lt.Laplace(_two_heads(False), "classification", subset_of_weights="all", hessian_structure="full"),
        ValueError,
        "2 outputs",
    ),
]

FIT = [
    (
        "subclassed_model_two_outputs",
        lambda c: lt.Laplace(_two_heads(True), "classification", subset_of_weights="all", hessian_structure="full").fit(
            (X, Y), verbose=False
        ),
        ValueError,
        "2 outputs",
    ),
    ("data_not_a_pair", _fit([X]), TypeError, "data"),
    ("data_triple", _fit((X, Y, Y)), TypeError, "data"),
    ("data_string", _fit("train.npz"), TypeError, "data"),
    ("x_scalar", _fit((1.0, Y)), ValueError, "x"),
    ("x_strings", _fit((np.array([["a"] * 4] * 20), Y)), TypeError, "x"),
    ("x_ragged", _fit(([[1.0, 2.0], [1.0]], [0, 1])), ValueError, "x"),
    ("lengths_differ", _fit((X, Y[:10])), ValueError, "y"),
    ("x_nan", _fit((np.where(X > 1.5, np.nan, X), Y)), ValueError, "x"),
    ("y_inf", _fit((X, np.where(Y > 1, np.inf, Y))), ValueError, "y"),
    ("labels_out_of_range", _fit((X, Y + 3)), ValueError, "label"),
    ("labels_negative", _fit((X, Y - 1)), ValueError, "label"),
    (
        "binary_labels_for_one_logit",
        lambda c: lt.Laplace(make_mlp(4, 1), "classification", subset_of_weights="all", hessian_structure="full").fit(
            (X, Y % 2)
        ),
        ValueError,
        "'binary' likelihood",
    ),
    ("labels_fractional", _fit((X, Y + 0.5)), ValueError, "label"),
    ("one_hot_wrong_width", _fit((X, np.eye(5)[Y % 5])), ValueError, "y"),
    ("empty", _fit((X[:0], Y[:0])), ValueError, "empty"),
    ("batch_size_zero", _fit((X, Y), batch_size=0), ValueError, "batch_size"),
    ("batch_size_float", _fit((X, Y), batch_size=2.5), ValueError, "batch_size"),
    ("batch_size_string", _fit((X, Y), batch_size="8"), ValueError, "batch_size"),
    ("dataset_unbatched", lambda c: _fit(_unbatched())(c), ValueError, "batch"),
    ("dataset_of_x_alone", lambda c: _fit(tf.data.Dataset.from_tensor_slices(X).batch(4))(c), ValueError, "(x, y)"),
    (
        "dataset_nan_batch",
        lambda c: _fit(tf.data.Dataset.from_tensor_slices((X * np.nan, Y)).batch(8))(c),
        ValueError,
        "x",
    ),
    (
        "dataset_repeating_forever",
        lambda c: _fit(tf.data.Dataset.from_tensor_slices((X, Y)).batch(8).repeat())(c),
        ValueError,
        "repeat",
    ),
    (
        "dataset_empty",
        lambda c: _fit(tf.data.Dataset.from_tensor_slices((X[:0], Y[:0])).batch(8))(c),
        ValueError,
        "empty",
    ),
    ("wrong_feature_count", _fit((X[:, :3], Y)), ValueError, "shape"),
    ("images_of_another_size", lambda c: _pooled_cnn().fit((np.zeros((4, 5, 5, 1)), Y[:4])), ValueError, "(6, 6, 1)"),
    ("predict_on_a_generator", lambda c: c["la"].predict(row for row in X), TypeError, "generator"),
    ("dict_for_single_input", _fit(({"a": X}, Y)), (ValueError, TypeError), "input"),
    ("dict_lacking_an_input", lambda c: _two_inputs().fit(({"a": X}, Y), verbose=False), ValueError, "['b']"),
    (
        "dataset_with_sample_weights",
        lambda c: _fit(tf.data.Dataset.from_tensor_slices((X, Y, np.ones(20))).batch(8))(c),
        ValueError,
        "sample_weight",
    ),
    (
        "per_position_outputs",
        lambda c: _tagger().fit((X[:, :, None], np.tile(Y[:, None], (1, 4))), verbose=False),
        ValueError,
        "Per-position",
    ),
    ("nan_in_hidden_weight_last_layer", _nan_hidden_weight, ValueError, "NaN"),
    (
        "override_before_fit",
        lambda c: lt.Laplace(c["model"], "classification", subset_of_weights="all", hessian_structure="full").fit(
            (X, Y), override=False
        ),
        lt.NotFittedError,
        "fit",
    ),
    (
        "override_lowrank",
        lambda c: (
            lt.Laplace(c["model"], "classification", hessian_structure="lowrank", rank=3, subset_of_weights="all")
            .fit((X, Y), verbose=False)
            .fit((X, Y), override=False, verbose=False)
        ),
        ValueError,
        "override",
    ),
    (
        "regression_targets_wrong_width",
        lambda c: lt.Laplace(make_mlp(4, 2), "regression", subset_of_weights="all", hessian_structure="full").fit(
            (X, Y_REGRESSION[:, :1])
        ),
        ValueError,
        "y",
    ),
    (
        "binary_labels_two",
        lambda c: lt.Laplace(make_mlp(4, 1), "binary", subset_of_weights="all", hessian_structure="full").fit(
            (X, Y + 1)
        ),
        ValueError,
        "label",
    ),
]

PREDICT = [
    (
        "predict_unfitted",
        lambda c: lt.Laplace(c["model"], "classification", subset_of_weights="all", hessian_structure="full").predict(
            X
        ),
        lt.NotFittedError,
        "fit",
    ),
    (
        "sample_unfitted",
        lambda c: lt.Laplace(c["model"], "classification", subset_of_weights="all", hessian_structure="full").sample(3),
        lt.NotFittedError,
        "fit",
    ),
    ("wrong_feature_count_after_good_call", lambda c: c["la"].predict(X[:, :3]), ValueError, "x"),
    ("zero_inputs", lambda c: c["la"].predict(X[:0]), ValueError, "x"),
    ("one_example_without_batch_axis", lambda c: c["la"].predict(X[0]), ValueError, "x[None]"),
    ("x_nan", lambda c: c["la"].predict(X * np.nan), ValueError, "x"),
    ("x_strings", lambda c: c["la"].predict(np.array([["a"] * 4])), TypeError, "x"),
    ("x_dict_for_single_input", lambda c: c["la"].predict({"a": X}), ValueError, "x"),
    ("pred_type_unknown", lambda c: c["la"].predict(X, pred_type="sample"), ValueError, "pred_type"),
    ("link_approx_unknown", lambda c: c["la"].predict(X, link_approx="logit"), ValueError, "link_approx"),
    ("n_samples_zero", lambda c: c["la"].predict(X, pred_type="nn", n_samples=0), ValueError, "n_samples"),
    (
        "n_samples_float",
        lambda c: c["la"].predict(X, pred_type="nn", n_samples=2.5),
        (TypeError, ValueError),
        "n_samples",
    ),
    ("seed_string", lambda c: c["la"].predict(X, pred_type="nn", seed="a"), TypeError, "seed"),
    ("joint_for_classification", lambda c: c["la"].predict(X, joint=True), ValueError, "joint"),
    (
        "diagonal_output_for_classification",
        lambda c: c["la"].predict(X, diagonal_output=False),
        ValueError,
        "diagonal_output",
    ),
    ("verbose_string", lambda c: c["la"].predict(X, verbose="yes"), TypeError, "verbose"),
    ("predictive_samples_zero", lambda c: c["la"].predictive_samples(X, n_samples=0), ValueError, "n_samples"),
    ("predictive_samples_pred_type", lambda c: c["la"].predictive_samples(X, pred_type="x"), ValueError, "pred_type"),
    (
        "predictive_distribution_bad_option",
        lambda c: c["la"].predictive_distribution(X, pred_type="x"),
        ValueError,
        "pred_type",
    ),
    ("sample_zero", lambda c: c["la"].sample(0), ValueError, "n_samples"),
    ("sample_string", lambda c: c["la"].sample("10"), TypeError, "n_samples"),
    ("outputs_at_draws_wrong_width", lambda c: c["la"].outputs_at_draws(np.zeros((2, 5)), X), ValueError, "thetas"),
    (
        "outputs_at_draws_nan",
        lambda c: c["la"].outputs_at_draws(np.full((2, c["la"].n_params), np.nan), X),
        ValueError,
        "thetas",
    ),
    (
        "pred_type_checked_with_other_options",
        lambda c: c["la"].predict(X, link_approx="bridge_norm", pred_type="x"),
        ValueError,
        "pred_type",
    ),
]

EVIDENCE = [
    (
        "evidence_unfitted",
        lambda c: lt.Laplace(
            c["model"], "classification", subset_of_weights="all", hessian_structure="full"
        ).log_marginal_likelihood(),
        lt.NotFittedError,
        "fit",
    ),
    (
        "evidence_prior_negative",
        lambda c: c["la"].log_marginal_likelihood(prior_precision=-1.0),
        ValueError,
        "prior_precision",
    ),
    (
        "evidence_prior_string",
        lambda c: c["la"].log_marginal_likelihood(prior_precision="a"),
        TypeError,
        "prior_precision",
    ),
    (
        "evidence_prior_inf",
        lambda c: c["la"].log_marginal_likelihood(prior_precision=np.inf),
        ValueError,
        "prior_precision",
    ),
    (
        "evidence_sigma_zero",
        lambda c: c["regression"].log_marginal_likelihood(sigma_noise=0.0),
        ValueError,
        "sigma_noise",
    ),
    (
        "evidence_sigma_string",
        lambda c: c["regression"].log_marginal_likelihood(sigma_noise="x"),
        TypeError,
        "sigma_noise",
    ),
    ("set_prior_nan", lambda c: setattr(c["la"], "prior_precision", np.nan), ValueError, "prior_precision"),
    ("set_sigma_classification", lambda c: setattr(c["la"], "sigma_noise", 2.0), ValueError, "sigma_noise"),
    ("set_sigma_negative", lambda c: setattr(c["regression"], "sigma_noise", -2.0), ValueError, "sigma_noise"),
    ("tune_method_unknown", lambda c: c["la"].optimize_prior_precision(method="adam"), ValueError, "method"),
    (
        "tune_structure_unknown",
        lambda c: c["la"].optimize_prior_precision(prior_structure="blocks"),
        ValueError,
        "prior_structure",
    ),
    (
        "tune_metric_unknown",
        lambda c: c["la"].optimize_prior_precision(method="gridsearch", val_data=(X, Y), metric="auc"),
        ValueError,
        "metric",
    ),
    (
        "gridsearch_without_val_data",
        lambda c: c["la"].optimize_prior_precision(method="gridsearch"),
        ValueError,
        "val_data",
    ),
    (
        "marglik_with_val_data",
        lambda c: c["la"].optimize_prior_precision(val_data=(X, Y)),
        ValueError,
        "method='gridsearch'",
    ),
    (
        "gridsearch_val_lengths",
        lambda c: c["la"].optimize_prior_precision(method="gridsearch", val_data=(X, Y[:5])),
        ValueError,
        "y",
    ),
    (
        "gridsearch_bad_grid",
        lambda c: c["la"].optimize_prior_precision(method="gridsearch", val_data=(X, Y), grid=[-1.0, 1.0]),
        ValueError,
        "grid",
    ),
    (
        "gridsearch_layerwise",
        lambda c: c["la"].optimize_prior_precision(method="gridsearch", val_data=(X, Y), prior_structure="layerwise"),
        ValueError,
        "prior_structure",
    ),
    (
        "sigma_tuning_classification",
        lambda c: c["la"].optimize_prior_precision(optimize_sigma_noise=True),
        ValueError,
        "optimize_sigma_noise",
    ),
    (
        "max_iterations_zero",
        lambda c: c["la"].optimize_prior_precision(max_iterations=0),
        ValueError,
        "max_iterations",
    ),
    ("tolerance_negative", lambda c: c["la"].optimize_prior_precision(tolerance=-1.0), ValueError, "tolerance"),
    (
        "kron_diag_prior",
        lambda c: (
            lt.Laplace(c["model"], "classification", hessian_structure="kron", subset_of_weights="all")
            .fit((X, Y), verbose=False)
            .optimize_prior_precision(prior_structure="diag")
        ),
        ValueError,
        "kron",
    ),
]

REPORTS = [
    ("evaluate_lengths", lambda c: c["la"].evaluate(X, Y[:5]), ValueError, "y"),
    (
        "evaluate_weighted_dataset",
        lambda c: c["la"].evaluate(tf.data.Dataset.from_tensor_slices((X, Y, np.ones(20))).batch(8)),
        ValueError,
        "sample_weight",
    ),
    ("evaluate_labels_out_of_range", lambda c: c["la"].evaluate(X, Y + 5), ValueError, "label"),
    ("evaluate_ood_wrong_shape", lambda c: c["la"].evaluate(X, Y, x_ood=X[:, :2]), ValueError, "x_ood"),
    ("evaluate_n_bins_zero", lambda c: c["la"].evaluate(X, Y, n_bins=0), ValueError, "n_bins"),
    (
        "evaluate_levels_out_of_range",
        lambda c: c["regression"].evaluate(X, Y_REGRESSION, levels=[1.5]),
        ValueError,
        "levels",
    ),
    ("inference_data_draws_zero", lambda c: c["la"].to_inference_data(num_draws=0), ValueError, "num_draws"),
    (
        "inference_data_chains_do_not_divide",
        lambda c: c["la"].to_inference_data(num_draws=10, num_chains=3),
        ValueError,
        "num_chains",
    ),
    ("inference_data_x_without_y", lambda c: c["la"].to_inference_data(X), ValueError, "y"),
    (
        "inference_data_lengths",
        lambda c: c["la"].to_inference_data(X, Y[:3], num_draws=8, num_chains=1),
        ValueError,
        "y",
    ),
    ("diagnose_too_few_draws", lambda c: c["la"].diagnose((X, Y), num_draws=50), ValueError, "num_draws"),
    ("diagnose_data_not_pair", lambda c: c["la"].diagnose(X), TypeError, "data"),
    (
        "report_unknown_likelihood_columns",
        lambda c: lt.classification_report({"MAP": np.ones((3, 2)) / 2}, [0, 1, 5]),
        ValueError,
        "label",
    ),
]


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _bad_file(kind):
    def run(c):
        tmp = c["tmp"]
        writers = {
            "npy": lambda p: p.write_bytes(_npy_bytes(np.zeros(3))),
            "text": lambda p: p.write_text("not a laplace file"),
            "metadata_list": lambda p: np.savez(p, metadata=np.asarray(json.dumps([1, 2]))),
            "no_metadata": lambda p: np.savez(p, mean=np.zeros(3)),
            "empty": lambda p: p.write_bytes(b""),
        }
        return lt.load(_file(tmp, f"{kind}.npz", writers[kind]), c["model"])

    return run


FILES = [
    (
        "save_unfitted",
        lambda c: lt.Laplace(c["model"], "classification", subset_of_weights="all", hessian_structure="full").save(
            c["tmp"] / "p.npz"
        ),
        lt.NotFittedError,
        "fit",
    ),
    (
        "save_into_missing_folder",
        lambda c: c["la"].save(c["tmp"] / "missing" / "p.npz"),
        (OSError, ValueError),
        "missing",
    ),
    ("load_missing_file", lambda c: lt.load(c["tmp"] / "nothing.npz", c["model"]), FileNotFoundError, "nothing"),
    ("load_model_not_keras", lambda c: lt.load(c["tmp"] / "nothing.npz", "model"), TypeError, "model"),
    ("load_npy", _bad_file("npy"), ValueError, "laplace-tf file"),
    ("load_text", _bad_file("text"), ValueError, "laplace-tf file"),
    ("load_metadata_not_object", _bad_file("metadata_list"), ValueError, "laplace-tf file"),
    ("load_no_metadata", _bad_file("no_metadata"), ValueError, "laplace-tf file"),
    ("load_empty_file", _bad_file("empty"), ValueError, "laplace-tf file"),
    (
        "load_onto_another_model",
        lambda c: lt.load(c["la"].save(c["tmp"] / "ok.npz"), make_mlp(4, 3, hidden=(6,))),
        ValueError,
        "variable",
    ),
]

MODELS = [
    ("stateful_recurrent_layer", lambda c: _stateful_lstm(), ValueError, "stateful=False"),
    ("fit_laplace_not_joint", lambda c: lt.fit_laplace(tfd.Normal(0.0, 1.0), {"y": 1.0}), TypeError, "model"),
    ("fit_laplace_observed_list", lambda c: lt.fit_laplace(_normal_model(), [1.0]), TypeError, "observed"),
    ("fit_laplace_unknown_name", lambda c: lt.fit_laplace(_normal_model(), {"z": 1.0}), ValueError, "observed"),
    ("fit_laplace_nan", lambda c: lt.fit_laplace(_normal_model(), {"y": np.full(5, np.nan)}), ValueError, "observed"),
    (
        "fit_laplace_wrong_length",
        lambda c: lt.fit_laplace(_normal_model(), {"y": np.zeros(4)}),
        ValueError,
        "observed",
    ),
    (
        "fit_laplace_all_observed",
        lambda c: lt.fit_laplace(_normal_model(), {"y": np.zeros(5), "mu": 0.0}),
        ValueError,
        "observed",
    ),
    (
        "fit_laplace_discrete",
        lambda c: lt.fit_laplace(
            tfd.JointDistributionNamed({"k": tfd.Poisson(3.0), "y": lambda k: tfd.Normal(k, 1.0)}), {"y": 1.0}
        ),
        ValueError,
        "'k'",
    ),
    (
        "fit_laplace_draws_zero",
        lambda c: lt.fit_laplace(_normal_model(), {"y": np.zeros(5)}, num_draws=0),
        ValueError,
        "num_draws",
    ),
    (
        "fit_laplace_optimizer",
        lambda c: lt.fit_laplace(_normal_model(), {"y": np.zeros(5)}, optimizer="sgd"),
        ValueError,
        "optimizer",
    ),
    (
        "laplace_approximation_not_callable",
        lambda c: lt.laplace_approximation(3.0, [0.0]),
        TypeError,
        "target_log_prob_fn",
    ),
    (
        "laplace_approximation_nan_start",
        lambda c: lt.laplace_approximation(lambda u: -(u**2), [np.nan]),
        ValueError,
        "initial_state",
    ),
]

HESSIANS = [
    ("hessian_not_callable", lambda c: lt.hessian(3.0, tf.ones([2])), TypeError, "f"),
    (
        "hessian_integer_x",
        lambda c: lt.hessian(lambda x: tf.reduce_sum(x), tf.ones([2], tf.int32)),
        ValueError,
        "floating",
    ),
    (
        "hessian_unconnected_option",
        lambda c: lt.hessian(lambda x: tf.reduce_sum(x**2), tf.ones([2]), unconnected="ignore"),
        ValueError,
        "unconnected",
    ),
    (
        "hessian_unconnected_input",
        lambda c: lt.hessian(lambda xs: tf.reduce_sum(xs[0] ** 2), [tf.ones([2]), tf.ones([3])]),
        ValueError,
        "x[1]",
    ),
    ("hessian_nonscalar_f", lambda c: lt.hessian(lambda x: x**2, tf.ones([2])), ValueError, "scalar"),
    (
        "hvp_wrong_length",
        lambda c: lt.hvp(lambda x: tf.reduce_sum(x**2), tf.ones([2]), tf.ones([3])),
        ValueError,
        "v",
    ),
    ("hessian_diagonal_string", lambda c: lt.hessian_diagonal(lambda x: x, "x"), (TypeError, ValueError), "x"),
]

CASES = CONSTRUCTOR + FIT + PREDICT + EVIDENCE + REPORTS + FILES + MODELS + HESSIANS


def test_there_are_over_a_hundred_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize(("name", "call", "error", "mentions"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_a_clear_error(name, call, error, mentions, fitted, tmp_path):
    context = {**fitted, "tmp": tmp_path}
    with pytest.raises(error) as caught:
        call(context)
    message = str(caught.value)
    assert mentions.lower() in message.lower(), f"{name}: the message does not mention {mentions!r}: {message}"
    assert "Traceback" not in message and "tensorflow/core" not in message and len(message) < 1500


def test_evaluate_checks_targets_and_ood_inputs_before_predicting(fitted, monkeypatch):
    la = fitted["la"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("predicted before checking the inputs")

    monkeypatch.setattr(la, "predict", must_not_run)
    monkeypatch.setattr(la, "map_outputs", must_not_run)
    with pytest.raises(ValueError, match="labels"):
        la.evaluate(X, Y + 5)
    with pytest.raises(ValueError, match="x_ood"):
        la.evaluate(X, Y, x_ood=X[:, :2])
    with pytest.raises(ValueError, match="single examples"):
        la.evaluate(X, Y, x_ood=tf.data.Dataset.from_tensor_slices(X))


def test_integer_inputs_for_a_float_model_are_accepted(fitted):
    la = fitted["la"]
    integers = np.round(X * 3).astype("int64")
    np.testing.assert_allclose(la.predict(integers), la.predict(integers.astype("float64")), rtol=1e-12)


def test_flipping_any_byte_of_a_saved_file_loads_the_same_posterior_or_is_a_value_error(fitted, tmp_path):
    model = make_mlp(4, 3, hidden=(2,), seed=3)
    la = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (X[:6], Y[:6]), verbose=False
    )
    content = bytearray(la.save(tmp_path / "small.npz").read_bytes())
    expected = la.predict(X[:3], verbose=False).numpy()
    outcomes = {"same": 0, "refused": 0}
    for position in range(len(content)):
        flipped = bytearray(content)
        flipped[position] ^= 0xFF
        path = tmp_path / "flipped.npz"
        path.write_bytes(bytes(flipped))
        try:
            loaded = lt.load(path, model)
        except ValueError:
            outcomes["refused"] += 1
            continue
        np.testing.assert_array_equal(loaded.predict(X[:3], verbose=False).numpy(), expected)
        outcomes["same"] += 1
    assert outcomes["refused"] > len(content) // 2
