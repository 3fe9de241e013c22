"""The `laplace-tf` command, driven in a subprocess as users run it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import laplace_tf as lt
from laplace_tf.reports.arviz_compat import arviz_major_version

COMMAND = shutil.which("laplace-tf", path=str(Path(sys.executable).parent)) or shutil.which("laplace-tf")


def run(*arguments, cwd):
    done = subprocess.run(
        [COMMAND, *map(str, arguments)], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A trained classifier saved as .keras, training data as .npz and test data as .csv."""
    path = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3)).astype("float32")
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    model.save(path / "model.keras")
    np.savez(path / "train.npz", x=x, y=y)
    np.savetxt(path / "test.csv", np.column_stack([x[:40], y[:40]]), delimiter=",", header="a,b,c,label", comments="")
    return path, x, y


def test_fit_report_predict_sample(workspace):
    path, x, y = workspace
    status, out, err = run(
        "fit", "model.keras", "train.npz", "--likelihood", "classification", "--structure", "full", "--out",
        "post.npz", "--quiet", cwd=path,
    )  # fmt: skip
    assert status == 0, err
    assert "saved the posterior to post.npz" in out
    model = keras.saving.load_model(path / "model.keras")
    la = lt.load(path / "post.npz", model)
    assert la.hessian_structure.value == "full" and la.n_data == 90 and la.n_params == 21  # last layer: 6*3 + 3

    status, out, err = run(
        "report", "post.npz", "model.keras", "test.csv", "--target", "label", "--json", "r.json", "--plot", "r.png",
        cwd=path,
    )  # fmt: skip
    assert status == 0, err
    expected = la.evaluate(x[:40], y[:40])
    written = json.loads((path / "r.json").read_text())["metrics"]
    for column in ("MAP", "Laplace"):
        assert written[column] == pytest.approx(expected.metrics[column], rel=1e-6)
    assert (path / "r.png").stat().st_size > 10_000 and "Uncertainty report" in out

    status, _, err = run(
        "predict", "post.npz", "model.keras", "test.csv", "--target", "label", "--out", "p.csv", cwd=path
    )
    assert status == 0, err
    predicted = np.loadtxt(path / "p.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(predicted, la.predict(x[:40]), rtol=1e-6)

    status, _, err = run(
        "sample", "post.npz", "model.keras", "--data", "train.npz", "--num-draws", "40", "--out", "d.nc", cwd=path
    )
    assert status == 0, err
    if arviz_major_version() >= 1:
        import xarray as xr

        data = xr.open_datatree(path / "d.nc")
        assert {"posterior", "log_likelihood", "fit"} <= set(data.children)
    else:
        import arviz as az

        data = az.from_netcdf(path / "d.nc")
        assert {"posterior", "log_likelihood", "fit"} <= set(data.groups())
    assert data["log_likelihood"]["y"].shape == (4, 10, 90)


def test_a_reward_model_fits_on_pairs_and_predicts_items_and_pairs(tmp_path):
    rng = np.random.default_rng(0)
    pairs = rng.normal(size=(60, 2, 3)).astype("float32")
    preferred = (pairs[:, 1, 0] > pairs[:, 0, 0]).astype(int)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    model.save(tmp_path / "reward.keras")
    np.savez(tmp_path / "pairs.npz", x=pairs, y=preferred)
    np.savez(tmp_path / "items.npz", x=pairs[:, 0])
    status, _, err = run(
        "fit", "reward.keras", "pairs.npz", "--likelihood", "reward_modeling", "--structure", "kron", "--out",
        "post.npz", "--kfac-approx", "reduce", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, err
    la = lt.load(tmp_path / "post.npz", keras.saving.load_model(tmp_path / "reward.keras"))
    assert la.options["kfac_approx"] == "reduce"  # the pair's two items reduced
    status, _, err = run("predict", "post.npz", "reward.keras", "items.npz", "--out", "r.npz", cwd=tmp_path)
    assert status == 0, err
    with np.load(tmp_path / "r.npz") as written:
        mean, variance = la.predict(pairs[:, 0])
        np.testing.assert_allclose(written["mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(written["variance"], variance, rtol=1e-6)
    status, out, err = run("report", "post.npz", "reward.keras", "pairs.npz", "--json", "r.json", cwd=tmp_path)
    assert status == 0, err
    assert "preference pairs" in out
    written = json.loads((tmp_path / "r.json").read_text())["metrics"]["Laplace"]
    assert written == pytest.approx(la.evaluate(pairs, preferred).metrics["Laplace"], rel=1e-6)


def test_errors_are_one_line_with_a_nonzero_status(workspace):
    path, x, _ = workspace
    status, _, err = run(
        "fit", "missing.keras", "train.npz", "--likelihood", "classification", "--out", "p.npz", cwd=path
    )
    assert status == 1 and "missing.keras: no such model file" in err and "Traceback" not in err
    np.savez(path / "wide.npz", x=np.hstack([x, x]), y=np.zeros(len(x), dtype=int))
    status, _, err = run("fit", "model.keras", "wide.npz", "--likelihood", "classification", "--out", "p.npz", cwd=path)
    assert status == 1 and "inputs have shape (6,) per example but the model takes (3,)" in err
    (path / "data.txt").write_text("1,2,3")
    status, _, err = run("fit", "model.keras", "data.txt", "--likelihood", "classification", "--out", "p.npz", cwd=path)
    assert status == 1 and "data must be .npz" in err
    status, _, err = run("fit", "model.keras", "train.npz", "--out", "p.npz", cwd=path)
    assert status == 2 and "--likelihood" in err  # argparse usage error
    status, _, err = run(
        "fit", "model.keras", "train.npz", "--likelihood", "classification", "--prior-method", "grid", "--out",
        "p.npz", cwd=path,
    )  # fmt: skip
    assert status == 1 and "needs validation data: --val-data" in err


def test_model_files_load_in_safe_mode(workspace):
    path, _, _ = workspace
    unsafe = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(3)])
    unsafe.save(path / "unsafe.keras")
    status, _, err = run(
        "fit", "unsafe.keras", "train.npz", "--likelihood", "classification", "--out", "p.npz", cwd=path
    )
    assert status == 1 and "safe mode" in err and not (path / "p.npz").exists()


def test_help_everywhere(workspace):
    path, _, _ = workspace
    for command in ("fit", "predict", "report", "sample", "demo"):
        status, out, _ = run(command, "--help", cwd=path)
        assert status == 0 and f"usage: laplace-tf {command}" in out


def test_demo_runs(tmp_path):
    env_out = tmp_path / "demo.png"
    status, out, err = run("demo", "--smoke", "--out", env_out, cwd=tmp_path)
    assert status == 0, err
    assert "Uncertainty report" in out and env_out.stat().st_size > 10_000


def test_npz_inputs_per_model_input(tmp_path):
    """A model with several inputs reads x_<name> arrays as a dict, x_0, x_1, ... as a list."""
    from laplace_tf.cli.data_files import InputError, read_data

    rng = np.random.default_rng(0)
    image, meta, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), np.arange(5)
    np.savez(tmp_path / "named.npz", x_image=image, x_meta=meta, y=y)
    np.savez(tmp_path / "listed.npz", x_1=meta, x_0=image, y=y)
    np.savez(tmp_path / "both.npz", x=image, x_meta=meta, y=y)
    np.savez(tmp_path / "ragged.npz", x_image=image, x_meta=meta[:4], y=y)
    x, targets = read_data(tmp_path / "named.npz", None)
    assert sorted(x) == ["image", "meta"] and np.array_equal(x["meta"], meta) and np.array_equal(targets, y)
    x, _ = read_data(tmp_path / "listed.npz", None)
    assert isinstance(x, list) and np.array_equal(x[0], image) and np.array_equal(x[1], meta)
    with pytest.raises(InputError, match="both 'x' and"):
        read_data(tmp_path / "both.npz", None)
    with pytest.raises(InputError, match=r"different numbers of examples \(x\['image'\]: 5, x\['meta'\]: 4\)"):
        read_data(tmp_path / "ragged.npz", None)


FIT = ["fit", "model.keras", "train.npz", "--likelihood", "classification"]


@pytest.mark.parametrize(
    ("arguments", "mentions"),
    [
        ([*FIT, "--out", "posterior.txt"], "--out posterior.txt: must end in .npz"),
        ([*FIT, "--out", "no/such/folder/p.npz"], "the folder no/such/folder does not exist"),
        ([*FIT, "--out", "."], "must end in .npz"),
        (["predict", "missing.npz", "model.keras", "test.csv", "--out", "p.json"], "--out p.json: must end in"),
        (["report", "missing.npz", "model.keras", "test.csv", "--json", "r.txt"], "--json r.txt: must end in .json"),
        (["report", "missing.npz", "model.keras", "test.csv", "--plot", "nowhere/r.png"], "does not exist"),
        (["sample", "missing.npz", "model.keras", "--out", "draws.npz"], "--out draws.npz: must end in .nc"),
    ],
)
def test_bad_output_paths_are_refused_before_any_work(workspace, arguments, mentions):
    path, _, _ = workspace
    before = sorted(p.name for p in path.iterdir())
    status, out, err = run(*arguments, cwd=path)
    assert status == 1 and mentions in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert sorted(p.name for p in path.iterdir()) == before  # nothing written, no work done


def test_a_corrupted_posterior_is_one_error_line(workspace):
    path, _, _ = workspace
    status, _, err = run(*FIT, "--out", "good.npz", "--prior-method", "none", "--quiet", cwd=path)
    assert status == 0, err
    content = bytearray((path / "good.npz").read_bytes())
    outcomes = set()
    for position in range(0, len(content), max(1, len(content) // 6)):  # six spread positions
        flipped = bytearray(content)
        flipped[position] ^= 0xFF
        (path / "flipped.npz").write_bytes(bytes(flipped))
        status, _, err = run("predict", "flipped.npz", "model.keras", "test.csv", "--target", "label", "--out",
                             "p.csv", cwd=path)  # fmt: skip
        assert "Traceback" not in err
        outcomes.add(status)
        if status == 1:  # TensorFlow's own start-up log lines aside, one line from laplace-tf
            ours = [line for line in err.splitlines() if line.startswith("laplace-tf")]
            assert len(ours) == 1 and ours[0].startswith("laplace-tf predict: error:")
    assert 1 in outcomes
