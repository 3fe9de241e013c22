"""Uncertainty reports and ArviZ diagnostics for a classifier and a regressor.

For each model: train it, fit a Laplace approximation, tune the prior by the marginal likelihood,
print the uncertainty report (MAP vs Laplace on held-out data and on inputs far from the data),
save its plot (reliability diagram or coverage curve), export ArviZ data and run az.summary,
az.loo and the Pareto-k-hat diagnostic of the Gaussian.

Run:  python examples/uncertainty_report.py          (about a minute)
      python examples/uncertainty_report.py --smoke  (a few seconds; what CI runs)
Writes outputs/report_classifier.png, outputs/report_regressor.png and the reports as JSON.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import arviz as az
import keras
import numpy as np

import laplace_tf as lt

PRIOR = 1.0  # the Gaussian prior's precision, trained in as weight decay on the output layer
SIGMA = 0.2  # the regression noise


def mlp(n_in: int, n_out: int, loss: keras.losses.Loss, weight_decay: float) -> keras.Model:
    """A 2x32 tanh MLP whose output layer is trained with the L2 penalty of a Gaussian prior."""
    keras.utils.set_random_seed(0)
    penalty = keras.regularizers.L2(weight_decay)
    model = keras.Sequential(
        [
            keras.Input((n_in,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(n_out, kernel_regularizer=penalty, bias_regularizer=penalty),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), loss)
    return model


def train(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """Mini-batch Adam, then full-batch steps with a small learning rate to settle at the mode."""
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    model.optimizer.learning_rate.assign(1e-3)
    model.fit(x, y, epochs=epochs, batch_size=len(x), verbose=0)


def classification_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half-moons with label noise."""
    labels = rng.integers(0, 2, size=n)
    angle = rng.uniform(0, np.pi, size=n)
    x = np.stack([np.cos(angle) + labels, np.sin(angle) * (1 - 2 * labels) + 0.5 * labels], axis=1)
    return (x + 0.2 * rng.normal(size=x.shape)).astype("float32"), labels


def regression_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """y = sin(3x) + noise on two clusters of x."""
    x = np.concatenate([rng.uniform(-2, -0.5, n // 2), rng.uniform(0.5, 2, n - n // 2)])[:, None]
    return x.astype("float32"), (np.sin(3 * x) + 0.2 * rng.normal(size=x.shape)).astype("float32")


def report_and_diagnose(
    name: str, la: lt.Laplace, train: tuple, test: tuple, x_far: np.ndarray, out: Path, draws: int
) -> None:
    """Prints the report of a fitted, tuned Laplace, saves its plot, and runs the ArviZ diagnostics."""
    report = la.evaluate(*test, x_ood=x_far)
    print(f"\n=== {name}: Laplace over the last layer, prior precision {float(la.prior_precision):.3g}")
    print(report)
    report.to_json(out.with_suffix(".json"))
    report.plot(out)
    print(f"plot saved to {out}")

    data = la.to_inference_data(*train, num_draws=draws, seed=0)
    print(az.summary(data, var_names=[list(data.posterior.data_vars)[-1]]))  # the output layer's bias
    print(az.loo(data))
    print(la.diagnose(train, num_draws=draws, seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny and fast, for CI")
    parser.add_argument("--out", type=Path, default=Path("outputs/report.png"), help="the classifier's plot")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    n_train, epochs, draws = (200, 30, 200) if smoke else (1000, 300, 1000)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    x, y = classification_data(n_train, rng)
    x_test, y_test = classification_data(1000, rng)
    classifier = mlp(2, 2, keras.losses.SparseCategoricalCrossentropy(from_logits=True), PRIOR / (2 * len(x)))
    train(classifier, x, y, epochs)
    la = lt.Laplace(
        classifier, "classification", subset_of_weights="last_layer", prior_precision=PRIOR, hessian_structure="full"
    )
    la.fit((x, y), verbose=False)
    far = (rng.normal(size=(300, 2)) + 8.0).astype("float32")
    report_and_diagnose("classifier", la, (x, y), (x_test, y_test), far, args.out, draws)

    x, y = regression_data(n_train, rng)
    x_test, y_test = regression_data(1000, rng)
    regressor = mlp(1, 1, keras.losses.MeanSquaredError(), PRIOR * SIGMA**2 / len(x))
    train(regressor, x, y, epochs)
    la = lt.Laplace(
        regressor,
        "regression",
        subset_of_weights="last_layer",
        prior_precision=PRIOR,
        sigma_noise=SIGMA,
        hessian_structure="full",
    )
    la.fit((x, y), verbose=False)
    far = rng.uniform(4, 6, size=(300, 1)).astype("float32")
    report_and_diagnose(
        "regressor", la, (x, y), (x_test, y_test), far, args.out.with_name("report_regressor.png"), draws
    )


if __name__ == "__main__":
    main()
