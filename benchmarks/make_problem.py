"""Makes the benchmark problems: data and a network trained on it (run in the peer env).

    python make_problem.py NAME OUT.npz

NAME is one of
* ``50``, ``300-300``: a tanh MLP on scikit-learn's digits (64 features, 10 classes), weights
  stored in Keras layout (a Dense kernel is the transpose of a torch Linear weight);
* ``regression``: a 10-50-1 tanh MLP on scikit-learn's diabetes data (standardised target);
* ``cnn``: two 3x3 Conv2D layers and a Dense layer on the 8x8 digit images;
* ``cnn100``: many classes: two 3x3 Conv2D layers, 4x4 max pooling and a Dense layer on
  synthetic 32x32x3 images of 100 classes (each a noisy copy of its class's random template);
* ``lstm``, ``transformer``: token-sequence classifiers (an Embedding, then an LSTM or a
  Transformer encoder block) on synthetic sequences whose class is a rule of the tokens;
* ``reward``: a 64-32-1 tanh reward model trained on 1,000 preference pairs of digits (the
  larger digit is preferred with Bradley-Terry probability ``sigmoid(label_b - label_a)``);
  ``x_test`` are single test digits, ``y_test`` their labels.

The last six store the torch ``state_dict`` (keys prefixed ``torch.``); `cases_ours.py` maps it
to Keras. Both sides therefore see identical data and weights.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from architectures_torch import build
from sizes import SEQUENCE_LENGTH, VOCABULARY
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

EPOCHS = {"regression": 40, "cnn": 60, "cnn100": 10, "lstm": 30, "transformer": 30, "reward": 40}


def digits() -> tuple:
    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    return train_test_split(x, y, test_size=0.3, random_state=0)


def diabetes() -> tuple:
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = ((y - y.mean()) / y.std())[:, None]
    return train_test_split(x, y, test_size=0.3, random_state=0)


def sequences() -> tuple:
    """Token sequences; the class counts how many of the first ten tokens appear (in quartiles)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCABULARY, (1400, SEQUENCE_LENGTH))
    score = (x < 10).sum(axis=1)
    y = np.digitize(score, np.quantile(score, [0.25, 0.5, 0.75]))
    return train_test_split(x, y, test_size=400, random_state=0)


def preference_pairs() -> tuple:
    """Pairs of training digits ``(1000, 2, 64)``, the preferred index by Bradley-Terry on the labels."""
    x_train, x_test, y_train, y_test = digits()
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(x_train), (1000, 2))
    difference = y_train[index[:, 1]] - y_train[index[:, 0]]
    preferred = (rng.uniform(size=1000) < 1 / (1 + np.exp(-difference))).astype(np.int64)
    return x_train[index], x_test, preferred, y_test


def templates() -> tuple:
    """Images ``(N, 32, 32, 3)`` of 100 classes: a class's random template plus noise, 20 per class to train."""
    rng = np.random.default_rng(0)
    template = rng.normal(size=(100, 32, 32, 3))
    y = np.repeat(np.arange(100), 25)
    x = template[y] + 1.5 * rng.normal(size=(len(y), 32, 32, 3))
    return train_test_split(x, y, test_size=500, random_state=0, stratify=y)


def data(name: str) -> tuple:
    if name == "cnn100":
        return templates()
    if name == "reward":
        return preference_pairs()
    if name == "regression":
        return diabetes()
    if name in ("lstm", "transformer"):
        return sequences()
    x_train, x_test, y_train, y_test = digits()
    if name == "cnn":
        x_train, x_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    return x_train, x_test, y_train, y_test


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, regression: bool) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3 if not regression else 3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.functional.mse_loss if regression else torch.nn.functional.cross_entropy
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()


def mlp(hidden: list[int]) -> torch.nn.Sequential:
    sizes = [64, *hidden, 10]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def main(name: str, out: Path) -> None:
    x_train, x_test, y_train, y_test = data(name)
    torch.manual_seed(0)
    regression = name == "regression"
    model = (build(name) if name in EPOCHS else mlp([int(h) for h in name.split("-")])).double()
    as_input = (lambda a: torch.tensor(a)) if name in ("lstm", "transformer") else (lambda a: torch.tensor(a).double())
    if name in ("cnn", "cnn100"):  # torch convolutions are channels-first
        as_input = lambda a: torch.tensor(a).double().permute(0, 3, 1, 2)  # noqa: E731
    train(model, as_input(x_train), torch.tensor(y_train), EPOCHS.get(name, 200), regression)
    model.eval()
    with torch.no_grad():
        prediction = model(as_input(x_test))
    if name in EPOCHS:
        weights = {f"torch.{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    else:
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        weights = {f"kernel_{i}": m.weight.detach().numpy().T for i, m in enumerate(linears)}
        weights.update({f"bias_{i}": m.bias.detach().numpy() for i, m in enumerate(linears)})
    np.savez(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **weights)
    if name == "reward":
        score = f"reward-label correlation on test digits {np.corrcoef(prediction[:, 0].numpy(), y_test)[0, 1]:.3f}"
    elif regression:
        score = f"test RMSE {float(torch.sqrt(torch.mean((prediction - torch.tensor(y_test)) ** 2))):.3f}"
    else:
        score = f"test accuracy {(prediction.argmax(1).numpy() == y_test).mean():.3f}"
    print(f"{out}: {sum(p.numel() for p in model.parameters())} parameters, {score}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
