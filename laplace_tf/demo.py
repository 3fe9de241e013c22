"""Demo: calibrated uncertainty for a trained Keras classifier, after the fact.

Trains a small MLP on a 2-D, three-class toy problem, fits a last-layer Laplace approximation
(full GGN over the output layer's weights), tunes a layerwise prior precision by the marginal
likelihood, and prints the uncertainty report: the MAP network and the Laplace predictive side by
side (accuracy, NLL, Brier score, ECE, ... on held-out data, and how well each tells inputs far
from the data apart). Saves a plot to outputs/demo.png and the report to outputs/demo.json.

Run:  laplace-tf demo [--smoke] [--out outputs/demo.png]   or   python examples/demo.py [--smoke]

Example:
    ```python
    >>> from laplace_tf import demo
    >>> report = demo.run(Path("outputs/demo.png"), smoke=True)
    ```
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

import laplace_tf as lt
from laplace_tf.files import write_atomically

CLASSES = 3


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping Gaussian blobs around the origin."""
    labels = rng.integers(0, CLASSES, size=n)
    angles = 2 * np.pi * labels / CLASSES
    centres = 1.6 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + rng.normal(size=(n, 2))).astype("float32"), labels


def train_model(x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(CLASSES),  # logits
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def plot(path: Path, model: keras.Model, la: lt.Laplace, x: np.ndarray, y: np.ndarray, report) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: pip install 'laplace-tf[plot]' for the plot.")
        return
    grid = np.linspace(-7, 7, 120, dtype="float32")
    points = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    confidence = {
        "MAP": keras.ops.convert_to_numpy(keras.ops.softmax(model(points))).max(axis=1),
        "Laplace (GLM, probit)": la.predict(points, verbose=False).numpy().max(axis=1),
    }
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (title, conf) in zip(axes[:2], confidence.items(), strict=True):
        image = ax.contourf(grid, grid, conf.reshape(len(grid), len(grid)), levels=np.linspace(1 / CLASSES, 1, 11))
        ax.scatter(x[:, 0], x[:, 1], c=y, s=6, cmap="Set1", edgecolors="none")
        ax.set_title(f"{title}: confidence")
        fig.colorbar(image, ax=ax)
    ax = axes[2]
    for name, curve in report.curves.items():
        confidence, accuracy = np.array(curve["confidence"], float), np.array(curve["accuracy"], float)
        ax.plot(confidence, accuracy, "o-", label=f"{name} (ECE {report.metrics[name]['ece']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", title="reliability on held-out data", xlim=(0.3, 1), ylim=(0.3, 1))
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: fig.savefig(file, format="png", dpi=90))
    print(f"plot saved to {path}")


def run(out: Path = Path("outputs/demo.png"), smoke: bool = False) -> lt.UncertaintyReport:
    """Trains the toy classifier, fits and tunes the Laplace, prints the report, saves the plot and JSON."""
    rng = np.random.default_rng(0)
    x_train, y_train = make_data(150 if smoke else 400, rng)
    x_test, y_test = make_data(300 if smoke else 2000, rng)
    x_far = (rng.normal(size=(200, 2)) * 0.5 + 6.0 * rng.choice([-1, 1], size=(200, 2))).astype("float32")

    print("training a 2-32-32-3 MLP ...")
    model = train_model(x_train, y_train, epochs=20 if smoke else 150)

    print("fitting the Laplace approximation (last layer, full GGN) ...")
    la = lt.Laplace(model, "classification", subset_of_weights="last_layer", hessian_structure="full")
    la.fit((x_train, y_train))
    la.optimize_prior_precision(method="marglik", prior_structure="layerwise")
    print(f"prior precisions (kernel, bias) tuned by the marginal likelihood: {la.prior_precision.numpy().round(3)}")
    print(f"log marginal likelihood: {float(la.log_marginal_likelihood()):.2f}")

    report = la.evaluate(x_test, y_test, x_ood=x_far, n_bins=10)
    print()
    print(report)
    print("(ood_*: inputs far from the data; a high AUROC means the model knows it is out of its depth)")
    out.parent.mkdir(parents=True, exist_ok=True)
    report.to_json(out.with_suffix(".json"))
    plot(out, model, la, x_test, y_test, report)
    return report
