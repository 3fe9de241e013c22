"""Reward modeling: a Laplace over a reward model learned from preferences (Bradley-Terry).

Items are points x; a hidden reward r(x) = 2 sin(2x) + x decides which of two items a rater
prefers, with probability sigmoid(r(x_b) - r(x_a)). A 1-32-32-1 network learns r from 1,000 pairs
of items in [-2, 2], with weight decay matching a unit Gaussian prior. The Laplace approximation
(kron, prior tuned by the evidence) then gives:

* on pairs: preference probabilities, scored against the MAP on fresh pairs inside the training
  range and beyond it (items in [2, 4]);
* on items: the reward's mean and variance; with ``joint=True`` their covariance, so the
  uncertainty of a reward *difference* r(x) - r(0), which is what a preference depends on (a
  constant shift of all rewards changes no preference, so the level itself is only known
  through the prior).

Run: python examples/reward_modeling.py [--out reward_modeling.png]
      python examples/reward_modeling.py --smoke   (what CI runs)
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np

import laplace_tf as lt

N_PAIRS = 1000


def true_reward(x: np.ndarray) -> np.ndarray:
    return 2 * np.sin(2 * x) + x


def preference_pairs(n: int, low: float, high: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(n, 2, 1)`` of items in [low, high] and the preferred index, drawn by Bradley-Terry."""
    pairs = rng.uniform(low, high, size=(n, 2, 1))
    difference = true_reward(pairs[:, 1, 0]) - true_reward(pairs[:, 0, 0])
    return pairs, (rng.uniform(size=n) < 1 / (1 + np.exp(-difference))).astype(int)


def train_reward_model(pairs: np.ndarray, preferred: np.ndarray, epochs: int) -> keras.Model:
    """The item model, trained through a pair model that scores both items (two logits)."""
    keras.utils.set_random_seed(0)
    decay = {"kernel_regularizer": keras.regularizers.L2(0.5 / len(pairs))}  # a unit Gaussian prior
    reward = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(32, activation="tanh", **decay),
            keras.layers.Dense(32, activation="tanh", **decay),
            keras.layers.Dense(1, **decay),
        ]
    )
    pair_input = keras.Input((2, 1))
    both = keras.layers.Flatten()(keras.layers.TimeDistributed(reward)(pair_input))
    scorer = keras.Model(pair_input, both)
    scorer.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scorer.fit(pairs, preferred, epochs=epochs, batch_size=32, verbose=0)
    return reward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="reward_modeling.png")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs, for CI")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    pairs, preferred = preference_pairs(N_PAIRS, -2, 2, rng)
    reward = train_reward_model(pairs, preferred, epochs=20 if smoke else 150)

    la = lt.Laplace(reward, "reward_modeling", hessian_structure="kron", subset_of_weights="all").fit(
        (pairs, preferred), verbose=False
    )
    la.optimize_prior_precision(verbose=False)
    print(f"prior precision {float(la.prior_precision):.3g}, log evidence {float(la.log_marginal_likelihood()):.2f}")
    print("Fresh pairs (2,000 each), MAP vs Laplace:")
    print(f"{'':>22}{'accuracy':>10}{'NLL MAP':>10}{'NLL Laplace':>13}")
    for name, (low, high) in {"inside [-2, 2]": (-2, 2), "beyond, in [2, 4]": (2, 4)}.items():
        metrics = la.evaluate(*preference_pairs(2000, low, high, rng)).metrics
        print(
            f"{name:>22}{metrics['Laplace']['accuracy']:10.3f}{metrics['MAP']['nll']:10.3f}"
            f"{metrics['Laplace']['nll']:13.3f}"
        )
    plot(la, pairs, args.out)
    print(f"wrote {args.out}")


def plot(la: lt.Laplace, pairs: np.ndarray, path: str) -> None:
    from matplotlib.figure import Figure

    grid = np.linspace(-4, 4, 161)[:, None]
    anchor = 80  # grid[80] = 0: rewards relative to the item x = 0
    mean, covariance = (t.numpy() for t in la.predict(grid, joint=True))
    relative = mean - mean[anchor]
    variance = np.diag(covariance) + covariance[anchor, anchor] - 2 * covariance[:, anchor]
    sd = np.sqrt(np.maximum(variance, 0))
    figure = Figure(figsize=(11, 4), layout="constrained")
    rewards, spread = figure.subplots(1, 2)
    truth = true_reward(grid[:, 0]) - true_reward(0.0)
    rewards.plot(grid[:, 0], truth, "k:", label="true r(x) - r(0)")
    rewards.plot(grid[:, 0], relative, color="C0", label="Laplace mean")
    rewards.fill_between(grid[:, 0], relative - 2 * sd, relative + 2 * sd, alpha=0.3, label="2 sd")
    rewards.axvspan(-4, -2, color="0.92", zorder=0)
    rewards.axvspan(2, 4, color="0.92", zorder=0)
    rewards.set(xlabel="item x", ylabel="reward relative to x = 0", title="Learned reward (grey: no training items)")
    rewards.legend(loc="upper left", fontsize=8)
    spread.plot(grid[:, 0], sd, label="sd of r(x) - r(0)")
    spread.plot(grid[:, 0], np.sqrt(np.diag(covariance)), "--", label="sd of r(x) (level set by the prior)")
    spread.hist(pairs.reshape(-1), bins=40, range=(-4, 4), density=True, color="0.8", label="training items")
    spread.set(xlabel="item x", ylabel="standard deviation", title="Reward uncertainty")
    spread.legend(loc="upper center", fontsize=8)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
