"""Laplace approximations of probabilistic models written with TensorFlow Probability.

Three models, each fitted with lt.fit_laplace (mode by L-BFGS in unconstrained space, exact
Hessian by nested tapes, draws mapped back to the constrained space) and summarised by ArviZ:
logistic regression, linear regression with unknown noise, and the eight-schools model in its
non-centred form. Prints az.summary and the Pareto k-hat of each; plots the eight schools'
effects with 90% intervals.

Run:  python examples/probabilistic_models.py          (a few seconds)
      python examples/probabilistic_models.py --smoke  (what CI runs)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import arviz as az
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import laplace_tf as lt

tfd = tfp.distributions
F64 = np.float64
SCHOOL_EFFECTS = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOL_ERRORS = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def logistic_regression(rng: np.random.Generator, n: int) -> lt.LaplaceResult:
    x = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ np.array([-0.5, 1.5, -1.0])))).astype(F64)
    model = tfd.JointDistributionNamed(
        dict(
            beta=tfd.Sample(tfd.Normal(F64(0), F64(2)), 3),
            y=lambda beta: tfd.Independent(tfd.Bernoulli(logits=tf.linalg.matvec(x, beta), dtype=tf.float64), 1),
        )
    )
    return lt.fit_laplace(model, observed={"y": y}, seed=0)


def linear_regression(rng: np.random.Generator, n: int) -> lt.LaplaceResult:
    x = rng.normal(size=(n, 2))
    y = 1.0 + x @ np.array([2.0, -1.0]) + 0.5 * rng.normal(size=n)
    model = tfd.JointDistributionNamed(
        dict(
            intercept=tfd.Normal(F64(0), F64(10)),
            slopes=tfd.Sample(tfd.Normal(F64(0), F64(10)), 2),
            sigma=tfd.HalfNormal(F64(1)),
            y=lambda intercept, slopes, sigma: tfd.Independent(
                tfd.Normal(intercept[..., None] + tf.linalg.matvec(x, slopes), sigma[..., None]), 1
            ),
        )
    )
    return lt.fit_laplace(model, observed={"y": y}, seed=0)


def eight_schools() -> lt.LaplaceResult:
    """The non-centred eight schools: theta_j = mu + tau * theta_tilde_j."""

    @tfd.JointDistributionCoroutineAutoBatched
    def model():
        mu = yield tfd.Normal(F64(0), F64(5), name="mu")
        tau = yield tfd.HalfCauchy(F64(0), F64(5), name="tau")
        theta_tilde = yield tfd.Sample(tfd.Normal(F64(0), F64(1)), 8, name="theta_tilde")
        yield tfd.Normal(mu + tau * theta_tilde, SCHOOL_ERRORS, name="y")

    return lt.fit_laplace(model, observed={"y": SCHOOL_EFFECTS}, seed=0)


def school_effects(result: lt.LaplaceResult) -> np.ndarray:
    """theta_j = mu + tau * theta_tilde_j per draw, (draws, 8)."""
    draws = result.draws
    return (draws["mu"][:, None] + draws["tau"][:, None] * draws["theta_tilde"]).numpy()


def plot_schools(path: Path, theta: np.ndarray) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: pip install 'laplace-tf[plot]' for the plot.")
        return
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    low, mid, high = np.percentile(theta, [5, 50, 95], axis=0)
    schools = np.arange(8)
    axes.errorbar(mid, schools, xerr=[mid - low, high - mid], fmt="o", capsize=3, label="Laplace: median, 90%")
    axes.plot(SCHOOL_EFFECTS, schools, "kx", label="observed effect")
    axes.set(yticks=schools, yticklabels=[f"school {j + 1}" for j in schools], xlabel="effect", title="Eight schools")
    axes.invert_yaxis()
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"plot saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="smaller data, for CI")
    parser.add_argument("--out", type=Path, default=Path("outputs/eight_schools.png"), help="where to save the plot")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    n = 100 if smoke else 500
    for title, result in [
        ("Logistic regression (true beta -0.5, 1.5, -1.0)", logistic_regression(rng, n)),
        ("Linear regression with unknown noise (true 1.0, [2.0, -1.0], sigma 0.5)", linear_regression(rng, n)),
        ("Eight schools, non-centred", eight_schools()),
    ]:
        print(f"\n=== {title}\n{result}")
        print(az.summary(result.to_inference_data(), kind="stats"))
        print(result.diagnose())
    plot_schools(args.out, school_effects(result))


if __name__ == "__main__":
    main()
