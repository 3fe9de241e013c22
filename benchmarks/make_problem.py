"""Makes the benchmark problem: scikit-learn digits and an MLP trained on it (run in the peer env).

Writes problem_<hidden>.npz with standardised train/test data and the trained weights in Keras
layout (a Dense kernel is the transpose of a torch Linear weight), so both sides use identical
data and weights.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def main(hidden: list[int], out: Path) -> None:
    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0)
    torch.manual_seed(0)
    sizes = [64, *hidden, 10]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers).double()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    xt, yt = torch.tensor(x_train), torch.tensor(y_train)
    for _ in range(200):
        for batch in torch.randperm(len(xt)).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimiser.step()
    weights = {}
    for i, layer in enumerate(m for m in model if isinstance(m, torch.nn.Linear)):
        weights[f"kernel_{i}"] = layer.weight.detach().numpy().T
        weights[f"bias_{i}"] = layer.bias.detach().numpy()
    np.savez(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **weights)
    accuracy = (model(torch.tensor(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"{out}: {sum(p.numel() for p in model.parameters())} parameters, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main([int(h) for h in sys.argv[1].split("-")], Path(sys.argv[2]))
