"""Tuning the prior: marginal likelihood (no validation data) against grid search (validation NLL).

Fits a small regression network to noisy samples of sin(x), fits a full Laplace approximation,
and tunes the prior precision (and the observation noise) two ways:

* ``method="marglik"``: maximise the Laplace evidence, jointly over prior precision and noise;
* ``method="gridsearch"``: the prior precision whose predictive NLL is lowest on validation data.

Prints both, with the test NLL each gives, and saves a plot of the evidence and the validation
NLL against the prior precision.

Run:  python examples/tune_prior.py           (about half a minute)
      python examples/tune_prior.py --smoke   (what CI runs)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import laplace_tf as lt


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-3, 3, size=(n, 1)).astype("float32")
    return x, (np.sin(2 * x) + 0.2 * rng.normal(size=(n, 1))).astype("float32")


def train(x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def test_nll(la: lt.Laplace, x: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(la.predictive_distribution(x).log_prob(y)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny and fast, for CI")
    parser.add_argument("--out", type=Path, default=Path("outputs/tune_prior.png"), help="where to save the plot")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    (x, y), (x_val, y_val), (x_test, y_test) = (make_data(n, rng) for n in (150, 100, 500))
    model = train(x, y, epochs=30 if smoke else 300)

    la = lt.Laplace(model, "regression", hessian_structure="full", sigma_noise=0.5, subset_of_weights="all")
    la.fit((x, y), verbose=False)
    la.optimize_prior_precision(method="marglik", optimize_sigma_noise=True)
    marglik_prior, sigma = float(la.prior_precision), float(la.sigma_noise)
    print(
        f"Laplace marglik: prior precision {marglik_prior:.4g}, sigma_noise {sigma:.4g} "
        f"(true 0.2), test NLL {test_nll(la, x_test, y_test):.4f}"
    )

    grid = np.logspace(-3, 3, 25)
    la.optimize_prior_precision(method="gridsearch", val_data=(x_val, y_val), grid=grid)
    grid_prior, validation_nll = float(la.prior_precision), la.grid_scores
    print(
        f"Laplace grid search (validation NLL): prior precision {grid_prior:.4g}, "
        f"test NLL {test_nll(la, x_test, y_test):.4f}"
    )

    evidence = [float(la.log_marginal_likelihood(p)) for p in grid]
    plot(args.out, grid, evidence, validation_nll, marglik_prior, grid_prior)


def plot(path: Path, grid: np.ndarray, evidence: list, validation_nll: np.ndarray, marglik: float, best: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: pip install 'laplace-tf[plot]' for the plot.")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.semilogx(grid, evidence, "o-")
    left.axvline(marglik, color="C1", ls="--", label=f"marglik optimum {marglik:.3g}")
    left.set(xlabel="prior precision", ylabel="log marginal likelihood", title="evidence (at the tuned noise)")
    left.legend()
    right.semilogx(grid, validation_nll, "o-", color="C2")
    right.axvline(best, color="C3", ls="--", label=f"grid optimum {best:.3g}")
    right.set(xlabel="prior precision", ylabel="validation NLL", title="grid search")
    right.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    main()
