"""lt.subnetwork_mask: each strategy against a selection computed independently, and the subnetwork
Laplace it feeds against the sub-block of the all-weights curvature."""

import numpy as np
import pytest
from conftest import flat_weights, make_mlp, naive_jacobians, output_hessians_np

import laplace_tf as lt


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(25, 4)), rng.integers(0, 3, size=25)
    return make_mlp(4, 3, hidden=(5,)), x, y


def flat_mask(model, masks: dict) -> np.ndarray:
    assert list(masks) == [v.path for v in model.trainable_variables]
    for variable, mask in zip(model.trainable_variables, masks.values(), strict=True):
        assert mask.dtype == bool and mask.shape == tuple(variable.shape)
    return np.concatenate([m.ravel() for m in masks.values()])


def top(scores: np.ndarray, n: int) -> set:
    return set(np.argsort(-scores, kind="stable")[:n].tolist())


def test_largest_magnitude(problem):
    model = problem[0]
    chosen = flat_mask(model, lt.subnetwork_mask(model, "largest_magnitude", 7))
    assert set(np.flatnonzero(chosen).tolist()) == top(np.abs(flat_weights(model)), 7)


def test_largest_variance_is_that_of_the_dense_diagonal_ggn(problem):
    model, x, y = problem
    masks = lt.subnetwork_mask(
        model, "largest_variance", 9, data=(x, y), likelihood="classification", prior_precision=2.0
    )
    jacobians = naive_jacobians(model, x)
    ggn = np.einsum("nkp,nkl,nlp->p", jacobians, output_hessians_np(np.asarray(model(x)), "classification"), jacobians)
    assert set(np.flatnonzero(flat_mask(model, masks)).tolist()) == top(1 / (ggn + 2.0), 9)


def test_random_is_seeded_and_uniform_without_replacement(problem):
    model = problem[0]
    first = flat_mask(model, lt.subnetwork_mask(model, "random", 10, seed=3))
    expected = np.random.default_rng(3).choice(first.size, 10, replace=False)
    assert set(np.flatnonzero(first).tolist()) == set(expected.tolist())
    assert np.array_equal(first, flat_mask(model, lt.subnetwork_mask(model, "random", 10, seed=3)))
    assert not np.array_equal(first, flat_mask(model, lt.subnetwork_mask(model, "random", 10, seed=4)))


def test_last_layer_and_patterns_select_whole_variables(problem):
    model = problem[0]
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    last = flat_mask(model, lt.subnetwork_mask(model, "last_layer"))
    assert last.sum() == sizes[-2] + sizes[-1] and last[-(sizes[-2] + sizes[-1]) :].all()
    kernel_path = model.trainable_variables[0].path
    first_kernel = flat_mask(model, lt.subnetwork_mask(model, [kernel_path]))
    assert first_kernel[: sizes[0]].all() and first_kernel.sum() == sizes[0]


def test_the_subnetwork_laplace_is_the_sub_block_of_the_full_one(problem):
    model, x, y = problem
    full = (
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
        .fit((x, y), verbose=False)
        .curvature.numpy()
    )
    masks = lt.subnetwork_mask(model, "largest_magnitude", 12)
    sub = lt.Laplace(model, "classification", subset_of_weights=masks, hessian_structure="full")
    sub.fit((x, y), verbose=False)
    chosen = np.flatnonzero(flat_mask(model, masks))
    assert sub.n_params == 12
    np.testing.assert_allclose(sub.curvature, full[np.ix_(chosen, chosen)], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: lt.subnetwork_mask(m, "largest", 5), "choose one of 'largest_magnitude'"),
        (lambda m: lt.subnetwork_mask(m, "random"), "needs n_params"),
        (lambda m: lt.subnetwork_mask(m, "random", 10_000), "more than the model's 43"),
        (lambda m: lt.subnetwork_mask(m, "largest_variance", 5), "needs data"),
        (lambda m: lt.subnetwork_mask(m, "last_layer", 5), "n_params is not used"),
        (lambda m: lt.subnetwork_mask(m, ["nothing/*"]), "no trainable variable matches"),
    ],
)
def test_mistakes_get_clear_errors(problem, call, message):
    with pytest.raises(ValueError, match=message):
        call(problem[0])
