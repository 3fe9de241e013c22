"""Laplace against MCMC (tfp.mcmc NUTS) on two models: where it agrees, and where it does not.

Linear regression with unknown noise (a posterior close to Gaussian) and the non-centred eight
schools (a heavy-tailed group scale tau). For each: posterior means and standard deviations of
Laplace and NUTS side by side, the Laplace's Pareto k-hat, and a plot of the marginals.
docs/probabilistic_models.md shows the output of a full run.

Run:  python examples/compare_with_nuts.py           (a minute or two: NUTS, 4 x 1000 draws)
      python examples/compare_with_nuts.py --smoke   (short chains, what CI runs)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from probabilistic_models import SCHOOL_EFFECTS, SCHOOL_ERRORS

import laplace_tf as lt

tfd, tfb = tfp.distributions, tfp.bijectors
F64 = np.float64


def regression_model(rng: np.random.Generator) -> tuple[tfd.JointDistribution, dict]:
    x = rng.normal(size=(50, 2))
    y = 1.0 + x @ np.array([2.0, -1.0]) + 0.5 * rng.normal(size=50)

    @tfd.JointDistributionCoroutineAutoBatched
    def model():
        intercept = yield tfd.Normal(F64(0), F64(10), name="intercept")
        slopes = yield tfd.Sample(tfd.Normal(F64(0), F64(10)), 2, name="slopes")
        sigma = yield tfd.HalfNormal(F64(1), name="sigma")
        yield tfd.Normal(intercept + tf.linalg.matvec(x, slopes), sigma, name="y")

    return model, {"y": y}


def schools_model() -> tuple[tfd.JointDistribution, dict]:
    @tfd.JointDistributionCoroutineAutoBatched
    def model():
        mu = yield tfd.Normal(F64(0), F64(5), name="mu")
        tau = yield tfd.HalfCauchy(F64(0), F64(5), name="tau")
        theta_tilde = yield tfd.Sample(tfd.Normal(F64(0), F64(1)), 8, name="theta_tilde")
        yield tfd.Normal(mu + tau * theta_tilde, SCHOOL_ERRORS, name="y")

    return model, {"y": SCHOOL_EFFECTS}


def nuts(model: tfd.JointDistribution, observed: dict, draws: int, burn_in: int, chains: int = 4) -> dict:
    """NUTS in unconstrained space with dual-averaging step sizes; constrained draws by name."""
    pinned = model.experimental_pin(**observed)
    bijector = pinned.experimental_default_event_space_bijector()
    kernel = tfp.mcmc.TransformedTransitionKernel(
        tfp.mcmc.NoUTurnSampler(pinned.unnormalized_log_prob, step_size=F64(0.1)), bijector
    )
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(kernel, num_adaptation_steps=int(0.8 * burn_in))
    initial = bijector.forward(
        tf.nest.map_structure(
            lambda shape: tf.random.stateless_uniform([chains, *shape], (1, 2), -2, 2, tf.float64),
            bijector.inverse_event_shape(pinned.event_shape),
        )
    )

    @tf.function(autograph=False)
    def run() -> tuple:
        return tfp.mcmc.sample_chain(
            draws, initial, kernel=kernel, num_burnin_steps=burn_in, trace_fn=None, seed=(3, 4)
        )

    samples = run()
    return {
        name: np.asarray(value).reshape(draws * chains, *value.shape[2:]) for name, value in samples._asdict().items()
    }


def summarise(name: str, laplace: lt.LaplaceResult, mcmc: dict, seconds: tuple[float, float]) -> list[str]:
    lines = [f"\n=== {name}: Laplace {seconds[0]:.1f} s, NUTS {seconds[1]:.1f} s", f"{laplace.diagnose()}"]
    lines.append(f"{'':16}{'Laplace mean':>14}{'sd':>9}{'NUTS mean':>12}{'sd':>9}")
    for variable, draws in laplace.draws.items():
        draws, reference = np.asarray(draws), mcmc[variable]
        flat, flat_ref = draws.reshape(len(draws), -1), reference.reshape(len(reference), -1)
        for j in range(flat.shape[1]):
            label = variable if flat.shape[1] == 1 else f"{variable}[{j}]"
            lines.append(
                f"{label:16}{flat[:, j].mean():>14.3f}{flat[:, j].std():>9.3f}"
                f"{flat_ref[:, j].mean():>12.3f}{flat_ref[:, j].std():>9.3f}"
            )
    return lines


def plot(path: Path, panels: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: pip install 'laplace-tf[plot]' for the plot.")
        return
    figure = Figure(figsize=(4 * len(panels), 3.5), layout="constrained")
    for axes, (title, laplace, mcmc) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        high = np.percentile(np.concatenate([laplace, mcmc]), 99)
        bins = np.linspace(min(laplace.min(), mcmc.min()), high, 60)
        axes.hist(mcmc, bins=bins, density=True, alpha=0.5, label="NUTS")
        axes.hist(laplace, bins=bins, density=True, histtype="step", linewidth=2, label="Laplace")
        axes.set(title=title, yticks=[])
        axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    print(f"plot saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="short chains, for CI")
    parser.add_argument("--out", type=Path, default=Path("outputs/laplace_vs_nuts.png"), help="where to save the plot")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    draws, burn_in = (100, 100) if smoke else (1000, 1000)
    panels = []
    for name, (model, observed) in [
        ("Linear regression, unknown noise", regression_model(np.random.default_rng(0))),
        ("Eight schools, non-centred", schools_model()),
    ]:
        start = time.perf_counter()
        laplace = lt.fit_laplace(model, observed=observed, num_draws=4 * draws, seed=0)
        middle = time.perf_counter()
        mcmc = nuts(model, observed, draws, burn_in)
        seconds = (middle - start, time.perf_counter() - middle)
        print("\n".join(summarise(name, laplace, mcmc, seconds)))
        scale = "sigma" if "sigma" in mcmc else "tau"
        panels.append((f"{scale} ({name.split(',')[0].lower()})", np.asarray(laplace.draws[scale]), mcmc[scale]))
    plot(args.out, panels)


if __name__ == "__main__":
    main()
