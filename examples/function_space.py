"""Function-space Laplace: the exact GP on a subset, and its Nystrom (ELLA) variant, against the full GGN.

A 2-32-32-3 tanh classifier (1,251 weights) on three interleaved spirals (600 training points).
The reference is the full GGN Laplace (prior tuned by the evidence; every other Laplace uses the
same prior). On 400 test points the script measures how far each approximation's predictive
variances are from the reference (median relative error over points and classes), its test NLL,
and its fit time:

* ``hessian_structure="gp"`` conditioned on M = 50, 150, 600 training points (exact GP; with all
  600 it is the full GGN Laplace);
* ``n_eigenvalues`` K = 10 ... 300 Nystrom features from M = 300 points, the posterior fitted to
  all the data;
* ``kron`` and ``diag`` for scale.

Run: python examples/function_space.py [--out function_space.png]
      python examples/function_space.py --smoke   (what CI runs)
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np

import laplace_tf as lt


def spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three spiral arms with noise; the arm is the class."""
    labels = rng.integers(0, 3, n)
    radius = rng.uniform(0.2, 1.0, n)
    angle = 2 * np.pi * labels / 3 + 3.0 * radius + 0.25 * rng.normal(size=n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), labels


def trained_classifier(x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    decay = {"kernel_regularizer": keras.regularizers.L2(0.5 / len(x)), "dtype": "float64"}
    model = keras.Sequential(
        [
            keras.Input((2,), dtype="float64"),
            keras.layers.Dense(32, activation="tanh", **decay),
            keras.layers.Dense(32, activation="tanh", **decay),
            keras.layers.Dense(3, **decay),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="function_space.png")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs and settings, for CI")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    keras.config.set_floatx("float64")  # the comparison is about the approximations, not round-off
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = spirals(600, rng), spirals(400, rng)
    model = trained_classifier(x, y, epochs=20 if smoke else 300)

    reference = lt.Laplace(model, "classification", hessian_structure="full", subset_of_weights="all").fit(
        (x, y), verbose=False
    )
    reference.optimize_prior_precision()
    prior = float(reference.prior_precision)
    exact = reference.glm_output_distribution(x_test, verbose=False)[1].numpy().diagonal(axis1=1, axis2=2)

    def measure(label: str, **options) -> dict:
        started = time.perf_counter()
        la = lt.Laplace(model, "classification", subset_of_weights="all", prior_precision=prior, **options).fit(
            (x, y), verbose=False
        )
        seconds = time.perf_counter() - started
        variance = la.glm_output_distribution(x_test, verbose=False)[1].numpy().diagonal(axis1=1, axis2=2)
        error = float(np.median(np.abs(variance / exact - 1)))
        nll = la.evaluate(x_test, y_test).metrics["Laplace"]["nll"]
        print(f"{label:>34}{error:12.2e}{nll:10.3f}{seconds:9.2f}")
        return {"error": error, "nll": nll}

    print(f"prior precision {prior:.3g} (tuned on the full GGN Laplace), {reference.n_params} weights")
    print(f"{'':>34}{'var. error':>12}{'NLL':>10}{'fit s':>9}")
    subsets = [50, 600] if smoke else [50, 150, 600]
    eigenvalues = [10, 50] if smoke else [10, 25, 50, 100, 200, 300]
    gp = {m: measure(f"gp, M = {m}", hessian_structure="gp", n_subset=m) for m in subsets}
    nystrom = {
        k: measure(f"gp Nystrom, M = 300, K = {k}", hessian_structure="gp", n_subset=300, n_eigenvalues=k)
        for k in eigenvalues
    }
    others = {name: measure(name, hessian_structure=name) for name in ("kron", "diag")}
    plot(gp, nystrom, others, args.out)
    print(f"wrote {args.out}")


def plot(gp: dict, nystrom: dict, others: dict, path: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    by_k, by_m = figure.subplots(1, 2)
    for axis, results, label, xlabel in (
        (by_k, nystrom, "gp, Nystrom (M = 300)", "Nystrom features K"),
        (by_m, gp, "gp, exact on the subset", "subset size M"),
    ):
        errors = [max(r["error"], 1e-9) for r in results.values()]  # exact ones at the axis floor
        axis.plot(list(results), errors, marker="o", label=label)
        for (name, result), style in zip(others.items(), ("--", ":"), strict=True):
            axis.axhline(result["error"], color="0.4", linestyle=style, label=name)
        axis.set(xlabel=xlabel, ylabel="median |var / var(full GGN) - 1|", yscale="log", ylim=(1e-9, 2))
        axis.legend(fontsize=8)
    by_k.set_title("Nystrom: error against K")
    by_m.set_title("Exact GP: error against the subset")
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
