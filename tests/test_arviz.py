"""ArviZ export and the PSIS diagnostic, checked against hand computations and by ArviZ's own functions.

Runs with arviz 0.x (InferenceData) and arviz >= 1 (DataTree, Python >= 3.12).
"""

import arviz as az
import matplotlib
import numpy as np
import pytest
from conftest import make_mlp, set_flat_weights, softmax_np
from scipy import stats

import laplace_tf as lt
from laplace_tf.reports.arviz_compat import arviz_major_version, group_names

matplotlib.use("Agg")
SIGMA, PRIOR = 0.5, 3.0


@pytest.fixture
def linear_regression():
    """Bayesian linear regression at its posterior mean: Laplace is exact."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 2))
    y = x @ np.array([1.0, -0.5]) + 0.2 + SIGMA * rng.normal(size=30)
    design = np.hstack([x, np.ones((30, 1))])
    mean = np.linalg.solve(design.T @ design / SIGMA**2 + PRIOR * np.eye(3), design.T @ y / SIGMA**2)
    model = make_mlp(2, 1, hidden=())
    set_flat_weights(model, mean)
    la = lt.Laplace(
        model, "regression", sigma_noise=SIGMA, prior_precision=PRIOR, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    return la, x, y, design


def _name(la, variable, layer=-1):
    """The ArviZ name of a layer's variable: Keras numbers layer names per process."""
    return f"{la.model.layers[layer].name}.{variable}"


def _draws(data, group, name):
    return np.asarray(data[group][name].values)


def test_groups_shapes_and_fit_group(linear_regression):
    la, x, y, _ = linear_regression
    data = la.to_inference_data(x, y, num_draws=400, num_chains=4, seed=0)
    expected = {"posterior", "posterior_predictive", "log_likelihood", "sample_stats", "observed_data", "fit"}
    assert set(group_names(data)) == expected
    kernel, bias = _name(la, "kernel"), _name(la, "bias")
    assert _draws(data, "posterior", kernel).shape == (4, 100, 2, 1)
    assert data["posterior"][kernel].dims == ("chain", "draw", f"{kernel}_dim_0", f"{kernel}_dim_1")
    assert _draws(data, "posterior_predictive", "y").shape == (4, 100, 30)
    np.testing.assert_array_equal(_draws(data, "observed_data", "y"), y)
    fit = data["fit"]
    assert list(fit["rows"].values) == [f"{kernel}[0,0]", f"{kernel}[1,0]", f"{bias}[0]"]
    np.testing.assert_allclose(fit["mean_vector"].values, la.mean)
    np.testing.assert_allclose(fit["covariance_matrix"].values, la.posterior.covariance)
    np.testing.assert_allclose(fit["standard_deviation"].values, np.sqrt(np.diag(la.posterior.covariance)))
    assert fit.attrs["log_marginal_likelihood"] == pytest.approx(float(la.log_marginal_likelihood()))
    # the draws are the posterior: their moments match it within Monte-Carlo error
    flat = np.concatenate(
        [
            _draws(data, "posterior", kernel).reshape(400, 2),
            _draws(data, "posterior", bias).reshape(400, 1),
        ],
        axis=1,
    )
    standard_errors = np.sqrt(np.diag(la.posterior.covariance) / 400)
    assert np.all(np.abs(flat.mean(0) - la.mean.numpy()) < 4 * standard_errors)


def test_log_likelihood_log_p_and_log_q_by_hand(linear_regression):
    la, x, y, design = linear_regression
    data = la.to_inference_data(x, y, num_draws=40, num_chains=2, seed=1)
    kernel, bias = _draws(data, "posterior", _name(la, "kernel")), _draws(data, "posterior", _name(la, "bias"))
    thetas = np.concatenate([kernel.reshape(40, 2), bias.reshape(40, 1)], axis=1)
    f = thetas @ design.T  # (draws, examples)
    pointwise = stats.norm(f, SIGMA).logpdf(y)
    np.testing.assert_allclose(_draws(data, "log_likelihood", "y").reshape(40, 30), pointwise, rtol=1e-10)
    log_prior = stats.multivariate_normal(np.zeros(3), np.eye(3) / PRIOR).logpdf(thetas)
    np.testing.assert_allclose(_draws(data, "sample_stats", "log_p").ravel(), pointwise.sum(1) + log_prior, rtol=1e-10)
    gaussian = stats.multivariate_normal(la.mean.numpy(), la.posterior.covariance.numpy())
    np.testing.assert_allclose(_draws(data, "sample_stats", "log_q").ravel(), gaussian.logpdf(thetas), rtol=1e-10)
    # Laplace is exact here: log p - log q is the log evidence for every draw
    log_weights = _draws(data, "sample_stats", "log_p") - _draws(data, "sample_stats", "log_q")
    np.testing.assert_allclose(log_weights, float(la.log_marginal_likelihood()), rtol=1e-9)


def test_exact_posterior_diagnoses_as_good(linear_regression):
    la, x, y, _ = linear_regression
    diagnosis = la.diagnose((x, y), num_draws=500, seed=0, batch_size=7)
    assert diagnosis.verdict == "good" and diagnosis.k_hat == -np.inf
    assert diagnosis.effective_sample_size == pytest.approx(500, rel=1e-6)
    assert "good approximation" in str(diagnosis) and "500 draws" in str(diagnosis)
    assert diagnosis.mode_distance < 1e-6 and "mode" not in str(diagnosis)
    np.testing.assert_allclose(diagnosis.log_p - diagnosis.log_q, float(la.log_marginal_likelihood()), rtol=1e-9)


def test_gaussian_away_from_the_posterior_is_unreliable(linear_regression):
    la, x, y, _ = linear_regression
    model = la.model
    set_flat_weights(model, la.mean.numpy() + 6 * np.sqrt(np.diag(la.posterior.covariance)))
    shifted = lt.Laplace(
        model, "regression", sigma_noise=SIGMA, prior_precision=PRIOR, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    diagnosis = shifted.diagnose((x, y), num_draws=1000, seed=0)
    assert diagnosis.verdict == "unreliable" and diagnosis.k_hat > 0.7
    assert diagnosis.effective_sample_size < 50 and "misses much of the posterior" in str(diagnosis)
    # the weights sit 6 standard deviations off in each coordinate: the gradient check measures
    # the Mahalanobis distance of the shift, d^T P d, exactly for this quadratic posterior
    shift = 6 * np.sqrt(np.diag(la.posterior.covariance))
    expected = np.sqrt(shift @ la.posterior.precision.numpy() @ shift)
    assert diagnosis.mode_distance == pytest.approx(expected, rel=1e-8)
    assert f"mean is {expected:.1f} posterior standard deviations from the posterior's mode" in str(diagnosis)


def test_diagnosis_on_a_subset_scales_the_log_likelihood(linear_regression):
    la, x, y, design = linear_regression
    diagnosis = la.diagnose((x[:10], y[:10]), num_draws=100, seed=3)
    thetas = la.sample(100, seed=3).numpy()
    subset_log_likelihood = stats.norm(thetas @ design[:10].T, SIGMA).logpdf(y[:10]).sum(1)
    log_prior = stats.multivariate_normal(np.zeros(3), np.eye(3) / PRIOR).logpdf(thetas)
    np.testing.assert_allclose(diagnosis.log_p, 3.0 * subset_log_likelihood + log_prior, rtol=1e-10)
    assert diagnosis.n_examples == 10 and "10 of 30 examples (scaled)" in str(diagnosis)


def test_verdicts_follow_the_thresholds():
    def verdict(k):
        return lt.Diagnosis(k, 100, 1, 1, 50.0, np.zeros(100), np.zeros(100), 0.0).verdict

    assert (verdict(0.3), verdict(0.6), verdict(0.9)) == ("good", "usable", "unreliable")


def test_classification_export_works_with_arviz_functions(classification_data):
    x, y = classification_data
    model = make_mlp(4, 3)
    la = lt.Laplace(
        model, "classification", prior_precision=5.0, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    data = la.to_inference_data(x, y, num_draws=400, num_chains=4, pred_type="nn", seed=0)
    # pointwise log-likelihood: log softmax of the network at each draw
    names = [_name(la, v, layer) for layer in (0, 1) for v in ("kernel", "bias")]
    draws = np.concatenate([_draws(data, "posterior", n).reshape(400, -1) for n in names], axis=1)
    for s in (0, 123, 399):
        set_flat_weights(model, draws[s])
        expected = np.log(softmax_np(model(x).numpy())[np.arange(len(y)), y])
        np.testing.assert_allclose(_draws(data, "log_likelihood", "y").reshape(400, -1)[s], expected, rtol=1e-10)
    predicted = _draws(data, "posterior_predictive", "y")
    assert predicted.shape == (4, 100, 23) and set(np.unique(predicted)) <= {0, 1, 2}
    bias = _name(la, "bias")
    summary = az.summary(data, var_names=[bias])
    assert summary.shape[0] == 3
    assert np.all(az.rhat(data)[bias].values < 1.05)
    assert np.all(az.ess(data)[bias].values > 200)
    loo = az.loo(data)
    elpd = loo.elpd if arviz_major_version() >= 1 else loo["elpd_loo"]
    assert np.isfinite(elpd) and elpd < 0
    plot_ppc = az.plot_ppc_dist if arviz_major_version() >= 1 else az.plot_ppc
    assert plot_ppc(data) is not None


def test_masked_subset_gets_an_entry_dimension(classification_data):
    x, y = classification_data
    model = make_mlp(4, 3)
    mask = np.zeros((5, 3), dtype=bool)
    mask[[0, 2], [1, 2]] = True
    la = lt.Laplace(
        model, "classification", subset_of_weights={model.layers[1].kernel.path: mask}, hessian_structure="full"
    )
    data = la.fit((x, y), verbose=False).to_inference_data(num_draws=20, num_chains=2, seed=0)
    kernel = _name(la, "kernel")
    assert data["posterior"][kernel].dims == ("chain", "draw", f"{kernel}_entry")
    np.testing.assert_array_equal(data["posterior"][f"{kernel}_entry"].values, [1, 8])
    assert list(data["fit"]["rows"].values) == [f"{kernel}[0,1]", f"{kernel}[2,2]"]
    assert set(group_names(data)) == {"posterior", "sample_stats", "fit"}


def test_bad_arguments(linear_regression):
    la, x, y, _ = linear_regression
    with pytest.raises(ValueError, match="multiple of num_chains"):
        la.to_inference_data(num_draws=10, num_chains=4)
    with pytest.raises(ValueError, match="both x and y"):
        la.to_inference_data(x)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        la.to_inference_data(x, np.where(y > 0, np.nan, y), num_draws=8, num_chains=2)
    with pytest.raises(ValueError, match="at least 100"):
        la.diagnose((x, y), num_draws=50)
    small = lt.Laplace(
        la.model, "regression", memory_limit=10_000, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    with pytest.raises(MemoryError, match="fewer draws"):
        small.to_inference_data(x, y, num_draws=1000)
    with pytest.raises(lt.NotFittedError):
        lt.Laplace(la.model, "regression", subset_of_weights="all", hessian_structure="full").to_inference_data()
