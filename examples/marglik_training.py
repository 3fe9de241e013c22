"""Marginal-likelihood training on the sinusoid: weights, prior and noise learned together.

The data of Immer et al. 2021: 150 points, x uniform on [0, 8], y = sin(x) + 0.3 noise. The same
1-50-1 tanh network is trained twice:

* as usual: mean squared error with a fixed weight decay (a unit Gaussian prior, or a strong decay
  of 0.1), then a post-hoc Laplace with prior and noise tuned by the evidence;
* by ``lt.marglik_training``: the prior precision (one per layer) and the noise follow the
  evidence during training (kron Laplace every 10 epochs, 10 Adam steps each).

Both are scored on 2,000 fresh points (NLL, coverage of the 95% interval) and plotted with the
evidence during training.

Run: python examples/marglik_training.py [--out marglik_training.png]
      python examples/marglik_training.py --smoke   (what CI runs)
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

import laplace_tf as lt


def sinusoid(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(0, 8, size=(n, 1))
    return x, np.sin(x) + 0.3 * rng.normal(size=(n, 1))


def network(weight_decay: float = 0.0) -> keras.Model:
    keras.utils.set_random_seed(0)
    decay = {"kernel_regularizer": keras.regularizers.L2(weight_decay)} if weight_decay else {}
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(50, activation="tanh", **decay), keras.layers.Dense(1, **decay)]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="marglik_training.png")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs, for CI")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = sinusoid(150, rng), sinusoid(2000, rng)
    epochs = 40 if smoke else 1000

    rows = {}
    for name, decay in {"unit prior": 1 / len(x), "strong decay": 0.1}.items():
        usual = network(weight_decay=decay)  # mse is twice the unit-noise NLL: 1 / N is a unit Gaussian prior
        usual.compile(keras.optimizers.Adam(1e-2), "mse")
        usual.fit(x, y, epochs=epochs, batch_size=50, verbose=0)
        post_hoc = lt.Laplace(usual, "regression", hessian_structure="kron", subset_of_weights="all").fit(
            (x, y), verbose=False
        )
        post_hoc.optimize_prior_precision(prior_structure="layerwise", optimize_sigma_noise=True)
        rows[f"decay ({name}) + post-hoc Laplace"] = post_hoc

    result = lt.marglik_training(
        network(), (x, y), "regression", epochs=epochs, learning_rate=1e-2, batch_size=50, marglik_frequency=10,
        verbose=False,
    )  # fmt: skip
    rows["marglik training"] = result.laplace
    print(f"{'':>38}{'sigma':>8}{'log evidence':>14}{'test NLL':>10}{'coverage 95':>13}")
    for name, la in rows.items():
        metrics = la.evaluate(x_test, y_test).metrics["Laplace"]
        print(
            f"{name:>38}{float(la.sigma_noise):8.3f}{float(la.log_marginal_likelihood()):14.2f}"
            f"{metrics['nll']:10.3f}{metrics['coverage_95']:13.3f}"
        )
    plot(rows, result.history, x, y, args.out)
    print(f"wrote {args.out}")


def plot(rows: dict, history: dict, x: np.ndarray, y: np.ndarray, path: str) -> None:
    from matplotlib.figure import Figure

    grid = np.linspace(-1, 9, 300)[:, None]
    figure = Figure(figsize=(11, 4), layout="constrained")
    bands, evidence = figure.subplots(1, 2)
    bands.scatter(x[:, 0], y[:, 0], s=6, color="0.5", label="training data")
    for (name, la), color in zip(rows.items(), ("C1", "C2", "C0"), strict=True):
        f_mean, f_var = (t.numpy()[:, 0] for t in la.predict(grid))
        sd = np.sqrt(f_var + float(la.sigma_noise) ** 2)
        bands.plot(grid[:, 0], f_mean, color=color, label=name)
        bands.fill_between(grid[:, 0], f_mean - 2 * sd, f_mean + 2 * sd, color=color, alpha=0.2)
    bands.plot(grid[:, 0], np.sin(grid[:, 0]), "k:", label="sin x")
    bands.set(xlabel="x", ylabel="y", title="Predictive mean and 2 sd (noise included)", ylim=(-2.5, 2.5))
    bands.legend(loc="lower left", fontsize=8)
    values = np.array(history["log_marginal_likelihood"])
    fitted = ~np.isnan(values)
    evidence.plot(np.array(history["epoch"])[fitted], values[fitted], marker=".")
    evidence.set(xlabel="epoch", ylabel="log evidence", title="Evidence during marglik training")
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
