"""Demo: a ReLU classifier that is confident everywhere, and what a Laplace approximation changes.

ReLU networks are overconfident far from their training data: their logits grow linearly along
any ray, so the MAP's confidence tends to one however far an input is (Kristiadi et al. 2020,
"Being Bayesian, even just a bit, fixes overconfidence in ReLU networks"). The demo trains a
2-50-50-3 ReLU MLP without weight decay on three well-separated blobs with 5% of the labels
redrawn, long enough to fit the noise (as networks trained to convergence do), fits a Laplace
approximation over all 2,853 weights (full GGN), tunes the prior precision by grid search on
the NLL of a held-out validation set, and prints the uncertainty report: MAP and Laplace side by
side on test data (NLL, ECE, ...) and on inputs far from the data (a ring at radius 10-20
around blobs at radius 3), whose AUROC says how well each tells far-away inputs from test
inputs by its confidence. Saves a plot to outputs/demo.png and the report to outputs/demo.json.

Run:  laplace-tf demo [--smoke] [--out outputs/demo.png]   or   python examples/demo.py [--smoke]

Example:
    ```python
    >>> from laplace_tf.cli import demo
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
LABEL_NOISE = 0.05
FAR_RADII = (10.0, 20.0)


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three blobs at radius 3 (standard deviation 0.5), with ``LABEL_NOISE`` of the labels redrawn."""
    labels = rng.integers(0, CLASSES, size=n)
    angles = 2 * np.pi * labels / CLASSES
    centres = 3.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    inputs = (centres + 0.5 * rng.normal(size=(n, 2))).astype("float32")
    noisy = rng.random(n) < LABEL_NOISE
    return inputs, np.where(noisy, rng.integers(0, CLASSES, size=n), labels)


def far_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """Inputs spread over a ring far from every blob."""
    radius, angle = rng.uniform(*FAR_RADII, size=n), rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype("float32")


def train_model(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> keras.Model:
    """A 2-50-50-3 ReLU MLP trained to fit (without weight decay, as networks often are)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dense(CLASSES),  # logits
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def plot(path: Path, model: keras.Model, la: lt.Laplace, x: np.ndarray, y: np.ndarray, report) -> None:
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle
    except ImportError:
        print("matplotlib is not installed: pip install 'laplace-tf[plot]' for the plot.")
        return
    grid = np.linspace(-FAR_RADII[1], FAR_RADII[1], 120, dtype="float32")
    points = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    confidence = {
        "MAP": keras.ops.convert_to_numpy(keras.ops.softmax(model(points))).max(axis=1),
        "Laplace (GLM, probit)": la.predict(points, verbose=False).numpy().max(axis=1),
    }
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (title, conf) in zip(axes[:2], confidence.items(), strict=True):
        image = ax.contourf(grid, grid, conf.reshape(len(grid), len(grid)), levels=np.linspace(1 / CLASSES, 1, 11))
        ax.scatter(x[:, 0], x[:, 1], c=y, s=4, cmap="Set1", edgecolors="none")
        for radius in FAR_RADII:
            ax.add_patch(Circle((0, 0), radius, fill=False, linestyle="--", color="white", linewidth=0.8))
        ax.set_title(f"{title}: confidence (far ring dashed)")
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


def run(out: Path = Path("outputs/demo.png"), smoke: bool = False, seed: int = 0) -> lt.UncertaintyReport:
    """Trains the toy classifier, fits and tunes the Laplace, prints the report, saves the plot and JSON."""
    rng = np.random.default_rng(seed)
    x_train, y_train = make_data(300, rng)
    x_test, y_test = make_data(300 if smoke else 2000, rng)
    x_far = far_points(200 if smoke else 500, rng)
    x_val, y_val = make_data(300, rng)

    print("training a 2-50-50-3 ReLU MLP (no weight decay, 5% label noise) ...")
    model = train_model(x_train, y_train, epochs=30 if smoke else 300, seed=seed)

    print("fitting the Laplace approximation (all weights, full GGN) ...")
    la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
    la.fit((x_train, y_train))
    la.optimize_prior_precision(method="gridsearch", val_data=(x_val, y_val))
    print(f"prior precision tuned by grid search on the validation NLL: {float(la.prior_precision):.3g}")

    report = la.evaluate(x_test, y_test, x_ood=x_far, n_bins=10)
    print()
    print(report)
    print(
        "(ood_*: inputs on a ring at radius 10-20, far from the blobs at radius 3; an AUROC above 0.5 means "
        "the model is less confident there than on test inputs)"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    report.to_json(out.with_suffix(".json"))
    plot(out, model, la, x_test, y_test, report)
    return report
