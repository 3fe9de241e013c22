"""Uncertainty reports: every number equals the metric computed directly from the predictions."""

import json
import sys

import numpy as np
import pytest
from conftest import make_mlp, softmax_np
from scipy import stats

import laplace_tf as lt
from laplace_tf.reports import calibration


@pytest.fixture
def classifier(classification_data):
    x, y = classification_data
    model = make_mlp(4, 3)
    return lt.Laplace(
        model, "classification", prior_precision=2.0, subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False), model


def test_classification_report_equals_the_metrics_of_both_predictives(classifier, classification_data):
    la, model = classifier
    x, y = classification_data
    x_ood = 6.0 * np.random.default_rng(5).normal(size=(11, 4))
    report = la.evaluate(x, y, x_ood=x_ood, n_bins=5)
    map_probs = softmax_np(model(x).numpy())
    la_probs = la.predict(x).numpy()
    for column, probs, ood in [
        ("MAP", map_probs, softmax_np(model(x_ood).numpy())),
        ("Laplace", la_probs, la.predict(x_ood).numpy()),
    ]:
        metrics = report.metrics[column]
        assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
        assert metrics["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(y)), y])))
        assert metrics["ece"] == pytest.approx(calibration.expected_calibration_error(probs, y, 5))
        assert metrics["adaptive_ece"] == pytest.approx(calibration.adaptive_calibration_error(probs, y, 5))
        assert metrics["ood_auroc_entropy"] == pytest.approx(calibration.ood_auroc(probs, ood, "entropy"))
        assert metrics["ood_entropy"] == pytest.approx(calibration.mean_entropy(ood))
        assert sum(report.curves[column]["count"]) == len(y)
    assert report.n_examples == 23 and report.n_ood == 11
    assert report.settings["hessian_structure"] == "full" and report.settings["link_approx"] == "probit"
    # the Laplace predictive is less confident than the MAP network
    assert report.metrics["Laplace"]["confidence"] < report.metrics["MAP"]["confidence"]


def test_regression_report_uses_the_noise_and_the_functional_variance(regression_data):
    x, y = regression_data
    model = make_mlp(3, 2)
    la = lt.Laplace(model, "regression", sigma_noise=0.4, subset_of_weights="all", hessian_structure="full").fit(
        (x, y), verbose=False
    )
    report = la.evaluate(x, y, x_ood=5.0 + x, levels=(0.5, 0.9))
    f_map = model(x).numpy()
    f_mean, f_var = (t.numpy() for t in la.predict(x))
    map_nll = -np.mean(np.sum(stats.norm(f_map, 0.4).logpdf(y), axis=1))
    la_nll = -np.mean(np.sum(stats.norm(f_mean, np.sqrt(f_var + 0.16)).logpdf(y), axis=1))
    assert report.metrics["MAP"]["nll"] == pytest.approx(map_nll)
    assert report.metrics["Laplace"]["nll"] == pytest.approx(la_nll)
    assert report.metrics["MAP"]["rmse"] == pytest.approx(np.sqrt(np.mean((y - f_map) ** 2)))
    inside = np.abs(y - f_mean) <= stats.norm.ppf(0.95) * np.sqrt(f_var + 0.16)
    assert report.metrics["Laplace"]["coverage_90"] == pytest.approx(np.mean(inside))
    assert report.metrics["MAP"]["width_50"] == pytest.approx(2 * stats.norm.ppf(0.75) * 0.4)
    # the MAP's predictive standard deviation is the same everywhere: it cannot tell OOD inputs apart
    assert report.metrics["MAP"]["ood_auroc_std"] == pytest.approx(0.5)
    assert report.metrics["Laplace"]["ood_auroc_std"] > 0.9
    assert report.curves["Laplace"]["level"][0] == pytest.approx(0.05)


def test_binary_report_uses_two_column_probabilities():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    y = (x[:, 0] > 0).astype(int)
    model = make_mlp(4, 1)
    report = (
        lt.Laplace(model, "binary", subset_of_weights="all", hessian_structure="full")
        .fit((x, y), verbose=False)
        .evaluate(x, y)
    )
    p = 1 / (1 + np.exp(-model(x).numpy()[:, 0]))
    expected = calibration.brier_score(np.stack([1 - p, p], axis=1), y)
    assert report.metrics["MAP"]["brier"] == pytest.approx(expected)


def test_report_exports(classifier, classification_data, tmp_path):
    la, _ = classifier
    report = la.evaluate(*classification_data, n_bins=40)  # many empty bins: NaN in the curves
    text = report.to_json(tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(text) == report.to_dict()
    assert None in report.to_dict()["curves"]["MAP"]["accuracy"]
    markdown = report.to_markdown().splitlines()
    assert markdown[0] == "| metric | MAP | Laplace |" and len(markdown) == 2 + len(report.metric_names)
    assert f"{report.metrics['Laplace']['ece']:.4f}" in str(report) and "ece ↓" in str(report)


@pytest.mark.parametrize("likelihood", ["classification", "regression"])
def test_report_plot_is_a_png(likelihood, classification_data, regression_data, tmp_path):
    x, y = classification_data if likelihood == "classification" else regression_data
    la = lt.Laplace(
        make_mlp(x.shape[1], 3 if likelihood == "classification" else 2),
        likelihood,
        subset_of_weights="all",
        hessian_structure="full",
    )
    la.fit((x, y), verbose=False)
    figure = la.evaluate(x, y).plot(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    assert len(figure.axes) == 2


def test_plot_without_matplotlib_says_how_to_install(classifier, classification_data, monkeypatch):
    report = classifier[0].evaluate(*classification_data)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'laplace-tf\[plot\]'"):
        report.plot()


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")

    def broken_write(file):
        file.write(b"partial")
        raise OSError("disk full")

    from laplace_tf.files import write_atomically

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, broken_write)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_evaluate_rejects_bad_input(classifier, classification_data):
    la, _ = classifier
    x, y = classification_data
    with pytest.raises(ValueError, match="same length"):
        la.evaluate(x, y[:-1])
    with pytest.raises(ValueError, match=r"labels\) must be in"):
        la.evaluate(x, y + 3)
    with pytest.raises(lt.NotFittedError):
        lt.Laplace(make_mlp(4, 3), "classification", subset_of_weights="all", hessian_structure="full").evaluate(x, y)
