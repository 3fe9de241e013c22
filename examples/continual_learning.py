"""Continual learning with an online Laplace: each task's posterior is the next task's prior.

Three tasks arrive in sequence. Each is a two-class problem on its own pair of the six input
features (the others are near zero), with a rule that alternates in sign, and one network (its
hidden layer and output layer shared by all tasks) learns them in turn:

* plain: each task trained from where the last left off, with weight decay: it forgets;
* online Laplace (Ritter et al. 2018): after task t a diagonal GGN Laplace is fitted whose prior is
  the previous posterior (``prior_mean`` = its mean, ``prior_precision`` = its per-parameter
  precision), and task t + 1 is trained on its loss minus that posterior's ``log_prob`` (per
  example): the curvature says which weights the earlier tasks need.

Across tasks the weights change, so each task gets a new ``Laplace`` rather than
``fit(override=False)``, which adds data to one fit at fixed weights.

Run: python examples/continual_learning.py [--out continual.png]
      python examples/continual_learning.py --smoke   (what CI runs)
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

import laplace_tf as lt

N_TASKS, N_FEATURES, PRIOR_PRECISION, LABEL_NOISE = 3, 6, 1.0, 0.05


def task_data(index: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Task ``index``: features 2 index and 2 index + 1 carry the signal, the class is the sign of
    their sum (even tasks) or difference (odd tasks); 5% of the labels are flipped."""
    x = 0.1 * rng.normal(size=(n, N_FEATURES))
    signal = rng.normal(size=(n, 2))
    x[:, 2 * index : 2 * index + 2] += signal
    labels = (signal[:, 0] + (1 if index % 2 == 0 else -1) * signal[:, 1] > 0).astype(int)
    return x.astype("float32"), np.where(rng.uniform(size=n) < LABEL_NOISE, 1 - labels, labels)


def make_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    hidden = keras.layers.Dense(16, activation="tanh")
    return keras.Sequential([keras.Input((N_FEATURES,)), hidden, keras.layers.Dense(2)])


def train(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, penalty) -> None:
    """Adam on the mean cross-entropy plus ``penalty()`` (the negative log prior per example)."""
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).batch(32)

    @tf.function
    def step(x_batch: tf.Tensor, y_batch: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            logits = model(x_batch, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_batch, logits, from_logits=True))
            loss += penalty()
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))

    for _ in range(epochs):
        for x_batch, y_batch in dataset:
            step(x_batch, y_batch)


def weight_decay(model: keras.Model, n: int):
    """The first task's prior, N(0, 1 / PRIOR_PRECISION), as a penalty per example."""
    return lambda: 0.5 * PRIOR_PRECISION * tf.add_n([tf.reduce_sum(w**2) for w in model.trainable_variables]) / n


def posterior_penalty(la: lt.Laplace, n: int):
    """Minus the previous posterior's log density at the current weights, per example."""
    return lambda: -la.posterior.log_prob(la.params.theta) / n


def accuracies(model: keras.Model, tests: list) -> list[float]:
    return [float(np.mean(np.argmax(model(x).numpy(), axis=1) == y)) for x, y in tests]


def run(epochs: int, n: int) -> dict[str, list[list[float]]]:
    """Per method, the test accuracy on every task after each task is learned."""
    rng = np.random.default_rng(0)
    tasks = [task_data(t, n, rng) for t in range(N_TASKS)]
    tests = [task_data(t, 1000, rng) for t in range(N_TASKS)]
    history: dict[str, list[list[float]]] = {"plain": [], "online Laplace": []}
    plain = make_model()
    for x, y in tasks:
        train(plain, x, y, epochs, weight_decay(plain, n))
        history["plain"].append(accuracies(plain, tests))
    model, la = make_model(), None
    for x, y in tasks:
        train(model, x, y, epochs, weight_decay(model, n) if la is None else posterior_penalty(la, n))
        prior = (PRIOR_PRECISION, 0.0) if la is None else (la.posterior.precision, la.mean)
        options = {"prior_precision": prior[0], "prior_mean": prior[1]}
        la = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="diag", **options)
        la = la.fit((x, y), verbose=False)
        history["online Laplace"].append(accuracies(model, tests))
    return history


def plot(history: dict[str, list[list[float]]], path: str) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    stages = np.arange(1, N_TASKS + 1)
    for axes, (name, accuracy) in zip(figure.subplots(1, 2, sharey=True), history.items(), strict=True):
        accuracy = np.asarray(accuracy)
        for task in range(N_TASKS):
            axes.plot(stages[task:], accuracy[task:, task], marker="o", label=f"task {task + 1}")
        axes.axhline(0.5, color="0.6", linestyle=":", label="chance")
        axes.set(title=name, xlabel="tasks learned so far", xticks=stages, ylim=(0.0, 1.0))
        axes.legend(loc="lower left")
    figure.axes[0].set_ylabel("test accuracy")
    figure.suptitle("Accuracy on each task as later tasks are learned")
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="continual_learning.png")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs, for CI")
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    history = run(epochs=20, n=100 if smoke else 200)
    print("Test accuracy on each task after learning all three in sequence:")
    print(f"{'':>16}{'task 1':>9}{'task 2':>9}{'task 3':>9}{'mean':>9}")
    for name, stages in history.items():
        final = stages[-1]
        print(f"{name:>16}" + "".join(f"{a:9.3f}" for a in final) + f"{np.mean(final):9.3f}")
    plot(history, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
