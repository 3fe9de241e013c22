"""Saving and loading: identical predictions after a round trip, and clear errors for bad files."""

import json

import keras
import numpy as np
import pytest
from conftest import make_mlp

import laplace_tf as lt


@pytest.mark.parametrize(
    ("structure", "subset"),
    [("full", "all"), ("diag", "last_layer"), ("kron", "all"), ("lowrank", "all"), ("full", "masks")],
)
def test_round_trip_gives_identical_predictions(structure, subset, classification_data, tmp_path):
    x, y = classification_data
    model = make_mlp(4, 3)
    if subset == "masks":
        subset = {model.layers[0].kernel.path: np.eye(4, 5, dtype=bool)}
    options = {"rank": 6} if structure == "lowrank" else {}
    la = lt.Laplace(model, "classification", hessian_structure=structure, subset_of_weights=subset, **options)
    la.fit((x, y), verbose=False).optimize_prior_precision(prior_structure="layerwise", verbose=False)
    path = la.save(tmp_path / "posterior.npz")
    loaded = lt.load(path, model)
    np.testing.assert_array_equal(loaded.predict(x), la.predict(x))
    np.testing.assert_array_equal(loaded.sample(5, seed=1), la.sample(5, seed=1))
    assert float(loaded.log_marginal_likelihood()) == float(la.log_marginal_likelihood())
    np.testing.assert_array_equal(loaded.prior_precision, la.prior_precision)
    assert (loaded.n_data, loaded.hessian_structure, loaded.n_params) == (23, la.hessian_structure, la.n_params)


def test_loaded_regression_continues_fitting_like_the_original(regression_data, tmp_path):
    x, y = regression_data
    model = make_mlp(3, 2)
    la = lt.Laplace(
        model, "regression", sigma_noise=0.3, temperature=0.5, subset_of_weights="all", hessian_structure="full"
    ).fit((x[:10], y[:10]), verbose=False)
    la.save(tmp_path / "posterior.npz")
    loaded = lt.load(tmp_path / "posterior.npz", model)
    assert float(loaded.sigma_noise) == pytest.approx(0.3) and loaded.temperature == 0.5
    la.fit((x[10:], y[10:]), override=False, verbose=False)
    loaded.fit((x[10:], y[10:]), override=False, verbose=False)
    np.testing.assert_array_equal(loaded.curvature, la.curvature)
    for loaded_moment, moment in zip(loaded.predict(x), la.predict(x), strict=True):
        np.testing.assert_array_equal(loaded_moment, moment)


def test_a_model_that_differs_is_refused_with_what_differs(classification_data, tmp_path):
    x, y = classification_data
    model = make_mlp(4, 3)
    lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    ).save(tmp_path / "p.npz")
    wider = keras.Sequential([keras.Input((4,), dtype="float64"), keras.layers.Dense(6, dtype="float64")])
    with pytest.raises(ValueError, match=r"does not match the saved Laplace: it has 2 trainable variables.*had 4"):
        lt.load(tmp_path / "p.npz", wider)
    clone = keras.models.clone_model(model)
    clone.set_weights([w + 0.01 for w in model.get_weights()])
    with pytest.raises(ValueError, match=r"weights differ"):
        lt.load(tmp_path / "p.npz", clone)
    model.layers[-1].bias.assign(model.layers[-1].bias + 1.0)
    with pytest.raises(ValueError, match="weights differ from those the saved Laplace was fitted at"):
        lt.load(tmp_path / "p.npz", model)


def test_bad_files_are_clear_errors(classification_data, tmp_path):
    x, y = classification_data
    model = make_mlp(4, 3)
    path = (
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
        .fit((x, y), verbose=False)
        .save(tmp_path / "p.npz")
    )
    content = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="truncated, corrupted"):
        lt.load(tmp_path / "truncated.npz", model)
    with pytest.raises(FileNotFoundError, match="No saved Laplace"):
        lt.load(tmp_path / "missing.npz", model)
    np.savez(tmp_path / "other.npz", metadata=np.asarray(json.dumps({"format": "something"})))
    with pytest.raises(ValueError, match="is not a laplace-tf file"):
        lt.load(tmp_path / "other.npz", model)
    with np.load(path) as archive:
        arrays = dict(archive)
    metadata = json.loads(str(arrays["metadata"]))
    arrays["mean"] = arrays["mean"] + 1e-9  # a silent change inside a well-formed archive
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(ValueError, match=r"corrupted: the arrays \['mean'\]"):
        lt.load(tmp_path / "tampered.npz", model)
    arrays["metadata"] = np.asarray(json.dumps({**metadata, "format_version": 99}))
    np.savez(tmp_path / "newer.npz", **arrays)
    with pytest.raises(ValueError, match="newer than this laplace-tf reads"):
        lt.load(tmp_path / "newer.npz", model)
    with pytest.raises(lt.NotFittedError):
        lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").save(
            tmp_path / "unfitted.npz"
        )
