"""Function-space (GP) Laplace against the full GGN Laplace and the kernel formulas of the GP."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import make_mlp, naive_jacobians, output_hessians_np

import laplace_tf as lt
from laplace_tf.networks.functional.gp import choose_subset


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4))
    return x, rng.integers(0, 3, 40), rng.normal(size=(40, 2))


@pytest.mark.parametrize("prior", [0.3, 5.0])
def test_with_every_point_in_the_subset_it_is_the_full_ggn_laplace(data, prior):
    x, labels, targets = data
    classifier, regressor = make_mlp(4, 3), make_mlp(4, 2, seed=1)
    for model, likelihood, y, extra in (
        (classifier, "classification", labels, {}),
        (regressor, "regression", targets, {"sigma_noise": 0.6}),
    ):
        common = {"prior_precision": prior, **extra}
        full = lt.Laplace(model, likelihood, subset_of_weights="all", hessian_structure="full", **common).fit(
            (x, y), batch_size=16, verbose=False
        )
        gp = lt.Laplace(model, likelihood, subset_of_weights="all", hessian_structure="gp", n_subset=40, **common)
        gp.fit((x, y), batch_size=16, verbose=False)
        np.testing.assert_allclose(gp.log_marginal_likelihood(), full.log_marginal_likelihood(), rtol=1e-10)
        np.testing.assert_allclose(gp.glm_output_distribution(x)[1], full.glm_output_distribution(x)[1], atol=1e-10)
        if likelihood == "regression":
            np.testing.assert_allclose(gp.predict(x, joint=True)[1], full.predict(x, joint=True)[1], atol=1e-10)
        else:
            for link in ("probit", "bridge"):
                np.testing.assert_allclose(
                    gp.predict(x, link_approx=link), full.predict(x, link_approx=link), atol=1e-10
                )
        gp.optimize_prior_precision()
        full.optimize_prior_precision()
        np.testing.assert_allclose(gp.prior_precision, full.prior_precision, rtol=1e-8)


def test_on_a_subset_the_predictive_is_the_kernel_formula_of_the_gp(data):
    """k** - k*M V (I + V^T K_MM V)^-1 V^T kM*, with k(x, x') = J(x) J(x')^T / delta, built by hand."""
    x, labels, _ = data
    model, prior = make_mlp(4, 3), 0.8
    gp = lt.Laplace(
        model,
        "classification",
        hessian_structure="gp",
        n_subset=12,
        prior_precision=prior,
        seed=3,
        subset_of_weights="all",
    )
    gp.fit((x, labels), batch_size=16, verbose=False)
    chosen = choose_subset(labels, 12, 3, balanced=False)
    jac_m = naive_jacobians(model, x[chosen]).reshape(12 * 3, -1)  # (M K, P)
    roots = np.zeros((12 * 3, 12 * 3))
    for m, hessian in enumerate(output_hessians_np(model(x[chosen]).numpy(), "classification")):
        values, vectors = np.linalg.eigh(hessian)
        roots[3 * m : 3 * m + 3, 3 * m : 3 * m + 3] = vectors * np.sqrt(np.maximum(values, 0))
    test = np.random.default_rng(1).normal(size=(5, 4))
    jac_star = naive_jacobians(model, test)
    k_mm = jac_m @ jac_m.T / prior
    middle = roots @ np.linalg.solve(np.eye(36) + roots.T @ k_mm @ roots, roots.T)
    for n in range(5):
        k_star_m = jac_star[n] @ jac_m.T / prior
        expected = jac_star[n] @ jac_star[n].T / prior - k_star_m @ middle @ k_star_m.T
        np.testing.assert_allclose(gp.glm_output_distribution(test[n : n + 1])[1][0], expected, rtol=1e-8, atol=1e-12)
    # the evidence: the whole data set's log-likelihood, the subset's log-determinant
    on_subset = lt.Laplace(
        model, "classification", hessian_structure="full", prior_precision=prior, subset_of_weights="all"
    )
    on_subset.fit((x[chosen], labels[chosen]), verbose=False)
    everything = lt.Laplace(
        model, "classification", hessian_structure="full", prior_precision=prior, subset_of_weights="all"
    )
    everything.fit((x, labels), verbose=False)
    log_likelihood_gap = float(on_subset._loss) - float(everything._loss)
    np.testing.assert_allclose(
        gp.log_marginal_likelihood(), float(on_subset.log_marginal_likelihood()) + log_likelihood_gap, rtol=1e-10
    )


def test_subsets_are_seeded_and_can_balance_the_classes():
    labels = np.repeat([0, 1, 2], [30, 30, 5])
    uniform = choose_subset(labels, 20, seed=0, balanced=False)
    assert len(np.unique(uniform)) == 20 and np.all(np.diff(uniform) > 0)
    np.testing.assert_array_equal(uniform, choose_subset(labels, 20, seed=0, balanced=False))
    assert not np.array_equal(uniform, choose_subset(labels, 20, seed=1, balanced=False))
    balanced = choose_subset(labels, 30, seed=0, balanced=True)
    counts = np.bincount(labels[balanced], minlength=3)
    assert counts.sum() == 30 and counts[2] == 5 and sorted(counts[:2]) == [12, 13]
    np.testing.assert_array_equal(choose_subset(labels, 100, seed=0, balanced=True), np.arange(65))


def test_gp_saves_loads_and_refuses_what_it_cannot_do(data, tmp_path):
    x, labels, _ = data
    model = make_mlp(4, 3)
    gp = lt.Laplace(
        model, "classification", hessian_structure="gp", n_subset=15, balanced_subset=True, subset_of_weights="all"
    )
    gp.fit((x, labels), verbose=False)
    gp.save(tmp_path / "gp.npz")
    loaded = lt.load(tmp_path / "gp.npz", model)
    np.testing.assert_allclose(loaded.predict(x), gp.predict(x), rtol=1e-12)
    assert loaded.options["n_subset"] == 15 and loaded.options["balanced_subset"] is True
    with pytest.raises(ValueError, match="works with curvature='ggn'"):
        lt.Laplace(model, "classification", hessian_structure="gp", curvature="ef", subset_of_weights="all")
    with pytest.raises(ValueError, match="n_subset must be a positive integer"):
        lt.Laplace(model, "classification", hessian_structure="gp", n_subset=0, subset_of_weights="all")
    keras.utils.set_random_seed(0)
    wide = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2000), keras.layers.Dense(10)])
    with pytest.raises(MemoryError, match="n_subset"):
        lt.Laplace(
            wide, "classification", subset_of_weights="all", hessian_structure="gp", n_subset=10**6, memory_limit=10**9
        )


def test_nystrom_with_all_eigenfunctions_is_the_full_ggn_laplace(data):
    """With the subset the whole data set and K = P (the Jacobians of 40 points span all 43
    weights), the features span the weight space and the Nyström posterior is exact."""
    x, labels, targets = data
    for model, likelihood, y in (
        (make_mlp(4, 3), "classification", labels),
        (make_mlp(4, 2, seed=1), "regression", targets),
    ):
        full = lt.Laplace(
            model, likelihood, hessian_structure="full", prior_precision=0.7, subset_of_weights="all"
        ).fit((x, y), verbose=False)
        nystrom = lt.Laplace(
            model,
            likelihood,
            hessian_structure="gp",
            n_subset=40,
            n_eigenvalues=full.n_params,
            prior_precision=0.7,
            subset_of_weights="all",
        ).fit((x, y), batch_size=16, verbose=False)
        np.testing.assert_allclose(nystrom.posterior.covariance, full.posterior.covariance, atol=1e-10)
        np.testing.assert_allclose(
            nystrom.glm_output_distribution(x)[1], full.glm_output_distribution(x)[1], atol=1e-10
        )


def test_nystrom_features_are_the_subset_kernels_top_eigenfunctions(data, tmp_path):
    """K < P: the posterior V (I + V^T G V / delta)^-1 V^T / delta with V the top right singular
    vectors of the subset's Jacobians and G the GGN of all the data, built in NumPy."""
    x, labels, _ = data
    model, prior, k = make_mlp(4, 3), 0.7, 12
    la = lt.Laplace(
        model,
        "classification",
        hessian_structure="gp",
        n_subset=15,
        n_eigenvalues=k,
        prior_precision=prior,
        seed=2,
        subset_of_weights="all",
    ).fit((x, labels), batch_size=16, verbose=False)
    chosen = choose_subset(labels, 15, 2, balanced=False)
    basis = np.linalg.svd(naive_jacobians(model, x[chosen]).reshape(45, -1))[2][:k].T  # (P, K)
    jacobians = naive_jacobians(model, x)
    ggn = np.einsum("nkp,nkl,nlq->pq", jacobians, output_hessians_np(model(x).numpy(), "classification"), jacobians)
    covariance = basis @ np.linalg.inv(np.eye(k) + basis.T @ ggn @ basis / prior) @ basis.T / prior
    np.testing.assert_allclose(la.posterior.covariance, covariance, atol=1e-10)
    draws = la.sample(20000, seed=0).numpy() - la.mean.numpy()
    scale = np.sqrt(np.diag(covariance)).max()
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.05 * scale**2)
    with pytest.raises(ValueError, match="no density over the weights and no marginal likelihood"):
        la.log_marginal_likelihood()
    with pytest.raises(ValueError, match="scalar prior precision"):
        la.prior_precision = np.arange(1.0, len(la.params.sizes) + 1)
        la.predict(x)
    la.prior_precision = prior
    la.save(tmp_path / "nystrom.npz")
    np.testing.assert_allclose(lt.load(tmp_path / "nystrom.npz", model).predict(x), la.predict(x), rtol=1e-12)


def test_independent_outputs_give_one_gp_per_output(data):
    """Output k: Sigma_k = (delta I + sum_m Lambda_mkk J_mk^T J_mk)^-1 over the subset, its variance
    J_*k Sigma_k J_*k^T, no cross-output covariance; the evidence sums the outputs' log-det ratios."""
    x, labels, _ = data
    model, prior = make_mlp(4, 3), 0.9
    la = lt.Laplace(
        model,
        "classification",
        hessian_structure="gp",
        n_subset=20,
        independent_outputs=True,
        prior_precision=prior,
        subset_of_weights="all",
    ).fit((x, labels), batch_size=16, verbose=False)
    chosen = choose_subset(labels, 20, 0, balanced=False)
    jacobians = naive_jacobians(model, x[chosen])
    hessians = output_hessians_np(model(x[chosen]).numpy(), "classification")
    jac_star = naive_jacobians(model, x[:6])
    covariance = la.glm_output_distribution(x[:6])[1].numpy()
    log_det_ratio = 0.0
    for k in range(3):
        precision = prior * np.eye(la.n_params) + np.einsum(
            "m,mp,mq->pq", hessians[:, k, k], jacobians[:, k], jacobians[:, k]
        )
        expected = np.einsum("np,pq,nq->n", jac_star[:, k], np.linalg.inv(precision), jac_star[:, k])
        np.testing.assert_allclose(covariance[:, k, k], expected, rtol=1e-8)
        log_det_ratio += np.linalg.slogdet(precision)[1] - la.n_params * np.log(prior)
    off_diagonal = covariance - np.einsum("nkk->nk", covariance)[:, :, None] * np.eye(3)
    assert np.all(off_diagonal == 0)
    theta = la.mean.numpy()
    evidence = -float(la._loss) - 0.5 * (log_det_ratio + prior * theta @ theta)
    np.testing.assert_allclose(la.log_marginal_likelihood(), evidence, rtol=1e-10)
    la.optimize_prior_precision()  # the compiled evidence, differentiable in the prior
    assert float(la.log_marginal_likelihood()) > evidence
    with pytest.raises(ValueError, match="independent_outputs=True each output has its own Gaussian"):
        la.sample(3)
    with pytest.raises(ValueError, match="independent_outputs=True is for the exact GP"):
        lt.Laplace(
            model,
            "classification",
            hessian_structure="gp",
            n_eigenvalues=5,
            independent_outputs=True,
            subset_of_weights="all",
        )
    with pytest.raises(ValueError, match="independent_outputs=True is for hessian_structure='gp'"):
        lt.Laplace(model, "classification", hessian_structure="full", independent_outputs=True, subset_of_weights="all")
