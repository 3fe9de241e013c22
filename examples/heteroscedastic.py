"""Heteroscedastic regression: noise that grows with x, learned by the network, with a Laplace on top.

The data: y = sin(x) + (0.05 + 0.2 x) * noise on [0, 4]. Two networks of the same size:

* homoscedastic: one output (the mean), ``likelihood="regression"``, one noise level tuned by
  the marginal likelihood;
* heteroscedastic: two outputs (a, b) in natural parameters, mean a * exp(-b) and noise exp(-b)
  (`laplace_tf.networks.heteroscedastic`); ``la.predict`` returns the mean, the epistemic variance of the
  mean and the aleatoric noise separately.

Both are scored on fresh data (coverage, NLL, CRPS) and plotted.

Run: python examples/heteroscedastic.py [--out heteroscedastic.png]
      python examples/heteroscedastic.py --smoke   (what CI runs)
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import laplace_tf as lt
from laplace_tf.networks.heteroscedastic import Heteroscedastic


def noise_scale(x: np.ndarray) -> np.ndarray:
    return 0.05 + 0.2 * x


def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(0, 4, size=(n, 1))
    return x, np.sin(x) + noise_scale(x) * rng.normal(size=(n, 1))


def train(outputs: int, loss, x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(32, activation="tanh", dtype="float64"),
            keras.layers.Dense(32, activation="tanh", dtype="float64"),
            keras.layers.Dense(outputs, dtype="float64"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), loss)
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def natural_parameter_loss(targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    return Heteroscedastic().loss(outputs, tf.cast(targets, outputs.dtype))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="heteroscedastic.png")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs, for CI")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = sample(400, rng), sample(2000, rng)
    epochs = 100 if smoke else 600

    homoscedastic = lt.Laplace(
        train(1, "mse", x, y, epochs), "regression", subset_of_weights="all", hessian_structure="full"
    ).fit((x, y), verbose=False)
    homoscedastic.optimize_prior_precision(optimize_sigma_noise=True)
    heteroscedastic = lt.Laplace(
        train(2, natural_parameter_loss, x, y, epochs),
        "heteroscedastic",
        subset_of_weights="all",
        hessian_structure="full",
    )
    heteroscedastic.fit((x, y), verbose=False).optimize_prior_precision()

    reports = {
        "homoscedastic": homoscedastic.evaluate(x_test, y_test),
        "heteroscedastic": heteroscedastic.evaluate(x_test, y_test),
    }
    print("Laplace predictives on 2,000 fresh points (noise included):")
    print(f"{'':>16}{'coverage 95':>13}{'NLL':>9}{'CRPS':>9}")
    for name, report in reports.items():
        metrics = report.metrics["Laplace"]
        print(f"{name:>16}{metrics['coverage_95']:13.3f}{metrics['nll']:9.3f}{metrics['crps']:9.3f}")
    plot(homoscedastic, heteroscedastic, x, y, args.out)
    print(f"wrote {args.out}")


def plot(homoscedastic: lt.Laplace, heteroscedastic: lt.Laplace, x: np.ndarray, y: np.ndarray, path: str) -> None:
    from matplotlib.figure import Figure

    grid = np.linspace(-0.25, 4.25, 200)[:, None]
    mean, epistemic, aleatoric = (t.numpy()[:, 0] for t in heteroscedastic.predict(grid))
    f_mean, f_var = (t.numpy()[:, 0] for t in homoscedastic.predict(grid))
    figure = Figure(figsize=(11, 4), layout="constrained")
    bands, noise = figure.subplots(1, 2)
    bands.scatter(x[:, 0], y[:, 0], s=4, color="0.6", label="training data")
    total = np.sqrt(epistemic + aleatoric)
    bands.fill_between(grid[:, 0], mean - 2 * total, mean + 2 * total, alpha=0.25, label="heteroscedastic: 2 sd, total")
    bands.fill_between(
        grid[:, 0],
        mean - 2 * np.sqrt(epistemic),
        mean + 2 * np.sqrt(epistemic),
        alpha=0.5,
        label="heteroscedastic: 2 sd, epistemic",
    )
    homoscedastic_sd = np.sqrt(f_var + float(homoscedastic.sigma_noise) ** 2)
    bands.plot(grid[:, 0], f_mean + 2 * homoscedastic_sd, "k--", lw=1, label="homoscedastic: 2 sd, total")
    bands.plot(grid[:, 0], f_mean - 2 * homoscedastic_sd, "k--", lw=1)
    bands.plot(grid[:, 0], mean, color="C0", label="heteroscedastic mean")
    bands.set(xlabel="x", ylabel="y", title="Predictive bands", ylim=(-3.5, 3.5))
    bands.legend(loc="lower left", fontsize=8)
    noise.plot(grid[:, 0], noise_scale(np.clip(grid[:, 0], 0, None)), "k:", label="true noise sd")
    noise.plot(grid[:, 0], np.sqrt(aleatoric), label="aleatoric sd (heteroscedastic)")
    noise.plot(grid[:, 0], np.sqrt(epistemic), label="epistemic sd of the mean (heteroscedastic)")
    noise.axhline(float(homoscedastic.sigma_noise), color="0.5", ls="--", label="sigma_noise (homoscedastic)")
    noise.axvspan(-0.25, 0, color="0.9")
    noise.axvspan(4, 4.25, color="0.9")
    noise.set(
        xlabel="x", ylabel="standard deviation", title="Uncertainty, split (grey: no training data)", ylim=(0, 1.5)
    )
    noise.legend(loc="upper left", fontsize=8)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
