"""Marginal-likelihood training: against the closed form of Bayesian linear regression, on the
sinusoid of Immer et al. 2021, and as a Keras callback inside model.fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.optimize
import tensorflow as tf

import laplace_tf as lt


def test_a_linear_model_learns_the_prior_and_noise_of_bayesian_linear_regression():
    """For y = X w + noise the Laplace evidence is exact, and at the MAP its gradient in the
    hyperparameters is the exact evidence's, so training converges to the type-II maximum
    likelihood of (alpha, sigma), found here directly from log N(y | 0, sigma^2 I + X X^T / alpha)."""
    rng = np.random.default_rng(0)
    n, d = 100, 3
    x = rng.normal(size=(n, d))
    y = x @ np.array([1.0, -0.5, 0.25]) + 0.5 * rng.normal(size=n)

    def negative_log_evidence(eta):
        alpha, sigma = np.exp(eta)
        covariance = sigma**2 * np.eye(n) + x @ x.T / alpha
        return 0.5 * (np.linalg.slogdet(covariance)[1] + y @ np.linalg.solve(covariance, y) + n * np.log(2 * np.pi))

    optimum = scipy.optimize.minimize(negative_log_evidence, [0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    alpha, sigma = np.exp(optimum.x)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((d,), dtype="float64"), keras.layers.Dense(1, use_bias=False, dtype="float64")]
    )
    result = lt.marglik_training(
        model, (x, y), "regression", hessian_structure="full", prior_structure="scalar", epochs=300,
        learning_rate=0.05, batch_size=n, marglik_frequency=5, hyper_steps=20, verbose=False,
    )  # fmt: skip
    np.testing.assert_allclose(float(result.laplace.prior_precision), alpha, rtol=1e-4)
    np.testing.assert_allclose(float(result.laplace.sigma_noise), sigma, rtol=1e-5)
    np.testing.assert_allclose(float(result.laplace.log_marginal_likelihood()), -optimum.fun, rtol=1e-8)
    posterior_mean = np.linalg.solve(x.T @ x / sigma**2 + alpha * np.eye(d), x.T @ y / sigma**2)
    np.testing.assert_allclose(result.laplace.mean, posterior_mean, rtol=1e-4)


def test_the_sinusoid_learns_its_noise_and_covers_fresh_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 8, size=(150, 1))
    y = np.sin(x) + 0.3 * rng.normal(size=(150, 1))
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(50, activation="tanh"), keras.layers.Dense(1)])
    result = lt.marglik_training(
        model, (x, y), "regression", epochs=400, learning_rate=1e-2, batch_size=50, marglik_frequency=10,
        verbose=False,
    )  # fmt: skip
    sigma = float(result.laplace.sigma_noise)
    training_rmse = float(np.sqrt(np.mean((model.predict(x, verbose=0) - y) ** 2)))
    assert abs(sigma - 0.3) < 0.05 and abs(sigma / training_rmse - 1) < 0.1
    x_test = rng.uniform(0, 8, size=(2000, 1))
    report = result.laplace.evaluate(x_test, np.sin(x_test) + 0.3 * rng.normal(size=(2000, 1)))
    assert 0.93 < report.metrics["Laplace"]["coverage_95"] < 0.99
    history = result.history
    assert len(history["loss"]) == 400 and history["epoch"][-1] == 400
    evidence = np.array(history["log_marginal_likelihood"])
    fitted = evidence[~np.isnan(evidence)]
    assert len(fitted) == 40 and fitted[-1] > fitted[0] + 50
    assert float(result.laplace.log_marginal_likelihood()) == pytest.approx(fitted.max(), rel=1e-6)


@pytest.mark.parametrize(("likelihood", "structure"), [("classification", "kron"), ("binary", "diag")])
def test_the_callback_inside_model_fit_keeps_the_weights_of_the_best_evidence(likelihood, structure, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 2)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (likelihood == "classification") * (x[:, 1] > 1)
    outputs = 3 if likelihood == "classification" else 1
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(outputs)])
    callback = lt.MarglikCallback(
        (x, y), likelihood, hessian_structure=structure, burnin=3, marglik_frequency=2, verbose=False
    )
    model.compile(keras.optimizers.Adam(0.05), loss=callback.loss)
    logs = model.fit(x, y, epochs=12, batch_size=40, callbacks=[callback], verbose=0).history
    evidence = np.array(logs["log_marginal_likelihood"])
    assert np.isnan(evidence[:3]).all() and np.isnan(evidence[4::2]).all()  # epochs 1-3 burn in; every 2nd
    np.testing.assert_array_equal(evidence, callback.history["log_marginal_likelihood"])
    best = int(np.nanargmax(evidence))
    la = callback.laplace
    assert float(la.log_marginal_likelihood()) == pytest.approx(evidence[best], rel=1e-6)
    np.testing.assert_array_equal(la.mean, np.concatenate([np.ravel(v.value) for v in model.trainable_variables]))
    assert all(v.regularizer is None for v in model.trainable_variables)  # the prior is detached after training
    model.save(tmp_path / "trained.keras")  # the likelihood's loss is saved with the model
    reloaded = keras.saving.load_model(tmp_path / "trained.keras")
    assert isinstance(reloaded.loss, lt.LikelihoodLoss) and reloaded.loss.likelihood.name.value == likelihood
    np.testing.assert_allclose(reloaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-6)
    expected = lt.Laplace(
        model, likelihood, hessian_structure=structure, prior_precision=la.prior_precision, subset_of_weights="all"
    )
    expected.fit((x, y), verbose=False)
    np.testing.assert_allclose(la.log_marginal_likelihood(), expected.log_marginal_likelihood(), rtol=1e-6)


def test_the_prior_enters_training_as_the_scaled_negative_log_prior():
    """One step of plain gradient descent equals the gradient of the mean loss plus the prior's
    0.5 * lambda * |theta|^2 / N, at the callback's starting prior precision, attached to each
    variable as a keras Regularizer (Keras 3.12, the last for Python 3.10, takes nothing else)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 2)).astype("float32"), rng.normal(size=(20, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    before = [np.array(w) for w in model.get_weights()]
    callback = lt.MarglikCallback((x, y), "regression", prior_precision=3.0, sigma_noise=0.5, verbose=False)
    regularizers = []
    watcher = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: regularizers.extend(v.regularizer for v in model.trainable_variables)
    )
    model.compile(keras.optimizers.SGD(0.1), loss=callback.loss)
    model.fit(x, y, epochs=1, batch_size=20, shuffle=False, callbacks=[callback, watcher], verbose=0)
    assert len(regularizers) == 2 and all(isinstance(r, keras.regularizers.Regularizer) for r in regularizers)
    kernel, bias = before
    residual = x @ kernel + bias - y
    gradient_kernel = x.T @ residual / 20 / 0.25 + 3.0 * kernel / 20
    gradient_bias = residual.sum(axis=0) / 20 / 0.25 + 3.0 * bias / 20
    trained = callback._state.best_weights  # the weights after the one step, where the Laplace was fitted
    np.testing.assert_allclose(trained[0], kernel - 0.1 * gradient_kernel, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(trained[1], bias - 0.1 * gradient_bias, rtol=1e-5, atol=1e-7)


def test_marglik_training_mistakes_get_clear_errors_before_training():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)).astype("float32"), rng.integers(0, 3, 30)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    weights = [np.array(w) for w in model.get_weights()]
    callback = lt.MarglikCallback((x, y), "classification", verbose=False)
    model.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="compiled with its loss"):
        model.fit(x, y, epochs=1, callbacks=[callback], verbose=0)
    model.compile(keras.optimizers.AdamW(weight_decay=1e-3), loss=callback.loss)
    with pytest.raises(ValueError, match="weight_decay"):
        model.fit(x, y, epochs=1, callbacks=[callback], verbose=0)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        lt.marglik_training(model, (x, y + 1), "classification", epochs=1, verbose=False)
    endless = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).repeat()  # a fit over it would never end
    with pytest.raises(ValueError, match=r"repeats forever.*dataset.take"):
        lt.marglik_training(model, endless, "classification", epochs=1, verbose=False)
    for got, expected in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(got, expected)  # nothing was trained
    decayed = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, kernel_regularizer="l2")])
    with pytest.raises(ValueError, match="weight regularisers"):
        lt.marglik_training(decayed, (x, y), "classification", epochs=1, verbose=False)
    with pytest.raises(ValueError, match="prior_structure='scalar' or 'layerwise'"):
        lt.MarglikCallback((x, y), "classification", prior_structure="diag")
    with pytest.raises(ValueError, match="burnin must be a non-negative integer"):
        lt.MarglikCallback((x, y), "classification", burnin=-1)
    with pytest.raises(ValueError, match="reward_modeling"):
        lt.MarglikCallback((x, y), "reward_modeling")
    with pytest.raises(TypeError, match=r"'n_epochs'.*did you mean 'epochs'"):  # laplace-torch's name
        lt.marglik_training(model, (x, y), "classification", n_epochs=1, verbose=False)
    with pytest.raises(TypeError, match=r"'temperture'.*did you mean 'temperature'"):
        lt.MarglikCallback((x, y), "classification", temperture=1.0)
