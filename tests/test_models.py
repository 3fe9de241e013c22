"""Laplace for TFP models: closed forms where Laplace is exact, Newton's method, hand-built objectives."""

import contextlib
import warnings

import arviz as az
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import optimize, special, stats

import laplace_tf as lt
from laplace_tf.reports.arviz_compat import group_names

tfd, tfb = tfp.distributions, tfp.bijectors
F64 = np.float64


def test_normal_mean_with_known_variance_is_the_closed_form():
    y = np.random.default_rng(0).normal(1.5, 0.7, size=15)
    model = tfd.JointDistributionNamed(
        dict(mu=tfd.Normal(F64(0.5), F64(2.0)), y=lambda mu: tfd.Sample(tfd.Normal(mu, F64(0.7)), 15))
    )
    result = lt.fit_laplace(model, observed={"y": y}, num_draws=400, seed=0)
    precision = 1 / 2.0**2 + 15 / 0.7**2
    mean = (0.5 / 2.0**2 + y.sum() / 0.7**2) / precision
    np.testing.assert_allclose(result.mean, [mean], rtol=1e-10)
    np.testing.assert_allclose(result.covariance, [[1 / precision]], rtol=1e-10)
    assert result.optimizer_result.converged and result.draws["mu"].shape == (400,)
    # Laplace is exact: the importance weights are all equal
    diagnosis = result.diagnose()
    assert diagnosis.k_hat == -np.inf and diagnosis.verdict == "good" and diagnosis.mode_distance < 1e-6


def test_bayesian_linear_regression_is_the_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(25, 3))
    y = x @ np.array([1.0, -1.0, 0.5]) + 0.3 * rng.normal(size=25)

    @tfd.JointDistributionCoroutineAutoBatched
    def model():
        w = yield tfd.Sample(tfd.Normal(F64(0), F64(0.5)), 3, name="w")
        yield tfd.Normal(tf.linalg.matvec(x, w), F64(0.3), name="y")

    result = lt.fit_laplace(model, observed={"y": y}, seed=0)
    precision = x.T @ x / 0.3**2 + np.eye(3) / 0.5**2
    np.testing.assert_allclose(result.precision, precision, rtol=1e-10)
    np.testing.assert_allclose(result.mean, np.linalg.solve(precision, x.T @ y / 0.3**2), rtol=1e-9)
    assert result.row_names == ["w[0]", "w[1]", "w[2]"]


def test_logistic_regression_equals_a_newton_solve():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 2))
    y = (rng.uniform(size=60) < special.expit(x @ np.array([1.5, -1.0]))).astype(F64)
    model = tfd.JointDistributionSequential(
        [
            tfd.Sample(tfd.Normal(F64(0), F64(1)), 2, name="beta"),
            lambda beta: tfd.Independent(
                tfd.Bernoulli(logits=tf.linalg.matvec(x, beta), dtype=tf.float64), 1, name="y"
            ),
        ]
    )
    result = lt.fit_laplace(model, observed={"y": y}, seed=0, optimizer="bfgs")
    beta = np.zeros(2)
    for _ in range(50):
        p = special.expit(x @ beta)
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + np.eye(2)
        beta -= np.linalg.solve(hessian, -(x.T @ (y - p)) + beta)
    p = special.expit(x @ beta)
    hessian = x.T @ (x * (p * (1 - p))[:, None]) + np.eye(2)
    np.testing.assert_allclose(result.mean, beta, rtol=1e-8)
    np.testing.assert_allclose(result.covariance, np.linalg.inv(hessian), rtol=1e-8)


Y_SCALE = np.random.default_rng(3).normal(0.0, 0.6, size=12)


def _scale_model():
    return tfd.JointDistributionNamed(
        dict(sigma=tfd.HalfNormal(F64(1.0)), y=lambda sigma: tfd.Sample(tfd.Normal(F64(0), sigma), 12))
    )


def _hand_objective(u: float, jacobian: bool) -> float:
    """log p(softplus(u)) (+ log softplus'(u)) for sigma ~ HalfNormal(1), y ~ N(0, sigma)."""
    sigma = np.logaddexp(0.0, u)
    value = stats.halfnorm.logpdf(sigma) + stats.norm(0, sigma).logpdf(Y_SCALE).sum()
    return value + (np.log(special.expit(u)) if jacobian else 0.0)


@pytest.mark.parametrize("jacobian", [True, False])
def test_positive_scale_against_a_hand_built_objective(jacobian):
    result = lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE}, jacobian=jacobian, num_draws=200, seed=1)
    mode = optimize.minimize_scalar(lambda u: -_hand_objective(u, jacobian), bracket=(-2, 0), tol=1e-12).x
    h = 1e-4
    curvature = (
        -(
            _hand_objective(mode + h, jacobian)
            - 2 * _hand_objective(mode, jacobian)
            + _hand_objective(mode - h, jacobian)
        )
        / h**2
    )
    np.testing.assert_allclose(result.mean, [mode], rtol=1e-6)
    np.testing.assert_allclose(result.covariance, [[1 / curvature]], rtol=1e-5)
    # constrained draws are the softplus of the unconstrained ones
    np.testing.assert_allclose(result.draws["sigma"], np.logaddexp(0, result.unconstrained_draws[:, 0]), rtol=1e-12)
    data = result.to_inference_data()
    np.testing.assert_allclose(
        data["unconstrained_posterior"]["sigma"].values.ravel(), result.unconstrained_draws[:, 0]
    )
    # log_p always includes the Jacobian: it is the density of the unconstrained draws
    expected = [_hand_objective(u, True) for u in result.unconstrained_draws[:, 0].numpy()]
    np.testing.assert_allclose(data["sample_stats"]["log_p"].values.ravel(), expected, rtol=1e-10)
    gaussian = stats.norm(mode, np.sqrt(1 / curvature))
    np.testing.assert_allclose(
        data["sample_stats"]["log_q"].values.ravel(), gaussian.logpdf(result.unconstrained_draws[:, 0]), atol=1e-5
    )


def test_without_jacobian_the_mode_is_the_constrained_map():
    result = lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE}, jacobian=False, seed=0)
    with_jacobian = lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE}, seed=0)
    sigma_map = optimize.minimize_scalar(
        lambda s: -(stats.halfnorm.logpdf(s) + stats.norm(0, s).logpdf(Y_SCALE).sum()),
        bounds=(0.01, 5),
        method="bounded",
    ).x
    assert float(result.mode["sigma"]) == pytest.approx(sigma_map, rel=1e-5)
    assert float(with_jacobian.mode["sigma"]) > float(result.mode["sigma"]) * 1.01


def test_inference_data_groups_and_fit_rows():
    result = lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE}, num_draws=400, num_chains=4, seed=0)
    data = result.to_inference_data()
    assert set(group_names(data)) == {"posterior", "unconstrained_posterior", "fit", "sample_stats", "observed_data"}
    assert data["posterior"]["sigma"].shape == (4, 100)
    np.testing.assert_array_equal(data["observed_data"]["y"].values, Y_SCALE)
    assert list(data["fit"]["rows"].values) == ["sigma"]
    np.testing.assert_allclose(data["fit"]["covariance_matrix"].values, result.covariance)
    summary = az.summary(data)
    assert summary.loc["sigma", "mean"] == pytest.approx(float(np.mean(result.draws["sigma"])), abs=1e-3)
    assert np.all(data["posterior"]["sigma"].values > 0)


def test_list_state_bijectors_and_calling_convention():
    def target(location, scale):  # tfp.mcmc convention: one argument per part
        return tfd.Normal(F64(1.0), F64(0.5)).log_prob(location) + tfd.Gamma(F64(4.0), F64(2.0)).log_prob(scale)

    result = lt.laplace_approximation(target, [F64(0.0), F64(1.0)], [tfb.Identity(), tfb.Exp()], seed=0)
    assert result.names == ["x0", "x1"]
    # location: exactly N(1, 0.25); log scale under the Jacobian: Gamma(4, 2) of exp(u) times exp(u)
    np.testing.assert_allclose(result.mean[0], 1.0, rtol=1e-9)
    np.testing.assert_allclose(result.covariance[0, 0], 0.25, rtol=1e-8)
    np.testing.assert_allclose(result.mean[1], np.log(4.0 / 2.0), rtol=1e-8)  # mode of 4u - 2e^u
    np.testing.assert_allclose(result.covariance[1, 1], 1 / 4.0, rtol=1e-7)  # -(d2) = 2 e^u = 4


def test_several_initial_points_find_the_higher_mode():
    def bimodal(x):
        return tf.reduce_logsumexp(
            tf.stack(
                [
                    np.log(0.2) + tfd.Normal(F64(-1.5), F64(0.3)).log_prob(x),
                    np.log(0.8) + tfd.Normal(F64(1.5), F64(0.3)).log_prob(x),
                ]
            )
        )

    one = lt.laplace_approximation(bimodal, F64(-1.5), seed=0)
    many = lt.laplace_approximation(bimodal, F64(-1.5), num_initial_points=12, seed=0)
    assert float(one.mean[0]) == pytest.approx(-1.5, abs=1e-3)
    assert float(many.mean[0]) == pytest.approx(1.5, abs=1e-3)
    assert many.optimizer_result.num_initial_points == 12


def test_flat_and_saddle_directions_are_named():
    flat = lambda state: -0.5 * state["a"] ** 2 + 0.0 * state["b"]  # noqa: E731
    with pytest.raises(lt.NotPositiveDefiniteError, match=r"flat direction\): eigenvalue .* along b \(\+1.00\)"):
        lt.laplace_approximation(flat, {"a": F64(1.0), "b": F64(2.0)})
    saddle = lambda state: -0.5 * state["a"] ** 2 + 0.5 * state["b"] ** 2  # noqa: E731
    with pytest.raises(lt.NotPositiveDefiniteError, match=r"eigenvalue -1 along b"):
        lt.laplace_approximation(saddle, {"a": F64(0.0), "b": F64(0.0)})


def test_non_convergence_warns():
    def banana(x):
        return -((1 - x[0]) ** 2) - 100 * (x[1] - x[0] ** 2) ** 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(lt.NotPositiveDefiniteError):  # far from the mode the Hessian may be indefinite
            lt.laplace_approximation(banana, tf.constant([-1.2, 1.0], tf.float64), max_iterations=2)
    assert any("did not converge in 2 iterations" in str(w.message) for w in caught)


def test_bad_model_input():
    with pytest.raises(ValueError, match=r"not variables of the model; its variables are \['sigma', 'y'\]"):
        lt.fit_laplace(_scale_model(), observed={"z": Y_SCALE})
    with pytest.raises(ValueError, match=r"observed\['y'\] contains NaN or inf"):
        lt.fit_laplace(_scale_model(), observed={"y": np.where(Y_SCALE > 0, np.nan, Y_SCALE)})
    with pytest.raises(TypeError, match=r"tfd\.JointDistribution"):
        lt.fit_laplace(tfd.Normal(0.0, 1.0), observed={})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE}, optimizer="adam")
    with pytest.raises(ValueError, match="multiple of num_chains"):
        lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE}, num_draws=10, num_chains=4)


def test_float32_coroutine_model_agrees_with_float64():
    root = tfd.JointDistributionCoroutine.Root

    def scale_model():
        sigma = yield root(tfd.HalfNormal(np.float32(1.0), name="sigma"))
        yield tfd.Sample(tfd.Normal(np.float32(0), sigma), 12, name="y")

    single = lt.fit_laplace(tfd.JointDistributionCoroutine(scale_model), observed={"y": Y_SCALE.astype("float32")})
    double = lt.fit_laplace(_scale_model(), observed={"y": Y_SCALE})
    assert single.mean.dtype == tf.float32 and single.draws["sigma"].dtype == tf.float32
    np.testing.assert_allclose(single.mean, double.mean, rtol=1e-4)
    np.testing.assert_allclose(single.covariance, double.covariance, rtol=1e-3)
