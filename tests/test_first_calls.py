"""What makes a script's first calls cheap (timing itself lives in benchmarks/run.py).

Importing laplace-tf leaves TensorFlow's runtime unstarted, so a user can still set thread
counts after the import; a second ``Laplace`` on the same model and configuration traces nothing.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import laplace_tf as lt


def test_importing_laplace_tf_leaves_tensorflow_configurable():
    code = (
        "import tensorflow as tf, laplace_tf as lt, laplace_tf.networks.laplace, laplace_tf.networks.tuning, "
        "laplace_tf.reports.report, laplace_tf.cli.command, laplace_tf.networks.io; "
        "tf.config.threading.set_intra_op_parallelism_threads(1); print('configurable')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip().endswith("configurable"), done.stderr[-2000:]


class TraceCounter(keras.layers.Layer):
    """An identity layer counting its graph-mode calls: one per trace of a function that runs the model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.traces = 0

    def call(self, inputs):
        if not tf.executing_eagerly():
            self.traces += 1
        return inputs


@pytest.mark.parametrize("structure", ["kron", "diag", "full", "lowrank"])
def test_a_second_laplace_on_the_same_model_traces_nothing(structure):
    counter = TraceCounter()
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), counter, keras.layers.Dense(2)]
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype("float32"), rng.integers(0, 2, 40)
    options = {"rank": 3} if structure == "lowrank" else {}

    def script() -> None:
        la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure=structure, **options)
        la.fit((x, y), batch_size=16, verbose=False)  # the last batch is smaller: no new trace either
        la.optimize_prior_precision()
        la.predict(x[:5])
        la.predict(x[:7], pred_type="nn", n_samples=4, seed=0)
        la.predict(tf.data.Dataset.from_tensor_slices(x[:9]).batch(4), verbose=False)  # batches of 4, 4, 1

    script()
    traced = counter.traces
    assert traced > 0  # the counter sees traces
    script()
    assert counter.traces == traced


@pytest.mark.parametrize("structure", ["kron", "diag", "full"])
def test_a_last_layer_script_traces_the_network_once(structure):
    """The last-layer fit and GLM predictive share one compiled function for the output layer's
    features (`curvature.output_layer.shared_output_features`)."""
    counter = TraceCounter()
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), counter, keras.layers.Dense(2)]
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype("float32"), rng.integers(0, 2, 40)
    built = counter.traces  # building the Sequential model called it symbolically
    la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure=structure)
    la.fit((x, y), batch_size=16, verbose=False)
    la.optimize_prior_precision()
    la.predict(x[:5])
    la.predict(x[:5], pred_type="nn", n_samples=4, seed=0)  # the draws' outputs from the features too
    assert counter.traces == built + 1


def test_fitting_several_models_and_structures_is_not_reported_as_retracing(caplog):
    """Each model and configuration compiles its functions once; TensorFlow's frequent-retracing
    warning (five traces in ten calls of one Python function) must not fire for a notebook that
    fits a few small models in every structure, one batch each."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype("float32"), rng.integers(0, 2, 20)
    for width in (3, 4, 5):
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(width, activation="tanh"), keras.layers.Dense(2)]
        )
        for structure in ("kron", "diag", "full"):
            for subset in ("last_layer", "all"):
                la = lt.Laplace(model, "classification", subset_of_weights=subset, hessian_structure=structure)
                la.fit((x, y), verbose=False).predict(x[:3], pred_type="nn", n_samples=2, seed=0)
                if structure == "full":  # a layerwise prior on full: the compiled evidence, one per Laplace
                    la.optimize_prior_precision(prior_structure="layerwise")
    assert "retracing" not in caplog.text


def test_fitting_several_probabilistic_models_is_not_reported_as_retracing(caplog):
    """A script fitting a handful of TFP models: each fit compiles its mode search and Hessian once."""
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    for n in range(3, 9):
        model = tfd.JointDistributionNamed(
            dict(mu=tfd.Normal(np.float64(0), np.float64(5)), y=lambda mu, n=n: tfd.Sample(tfd.Normal(mu, 1.0), n))
        )
        result = lt.fit_laplace(model, observed={"y": np.arange(n, dtype=np.float64)}, seed=0)
        np.testing.assert_allclose(result.mean, [(n - 1) / 2 * n / (n + 1 / 25)], rtol=1e-6)  # conjugate posterior mean
    assert "retracing" not in caplog.text
