"""laplace-torch's marglik_training on the sinusoid of examples/marglik_training.py (run in the peer env).

    python benchmarks/marglik_peer.py

Same data (NumPy seed 0: 150 training and 2,000 test points), a 1-50-1 tanh network (torch's own
initialisation), kron, layerwise prior, 1,000 epochs of Adam at 1e-2 in batches of 50, a Laplace
fit every 10 epochs: the settings of the example. Prints the learned noise, the log evidence, the
test NLL and 95% coverage of the GLM predictive with noise, and the time.
"""

import time

import numpy as np
import torch
from laplace.marglik_training import marglik_training
from torch.utils.data import DataLoader, TensorDataset


def sinusoid(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(0, 8, size=(n, 1))
    return x, np.sin(x) + 0.3 * rng.normal(size=(n, 1))


def main() -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    (x, y), (x_test, y_test) = sinusoid(150, rng), sinusoid(2000, rng)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1, 50), torch.nn.Tanh(), torch.nn.Linear(50, 1))
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    started = time.perf_counter()
    la, model, _, _ = marglik_training(
        model, DataLoader(data, batch_size=50, shuffle=True), likelihood="regression", hessian_structure="kron",
        n_epochs=1000, optimizer_kwargs={"lr": 1e-2}, marglik_frequency=10, prior_structure="layerwise",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    f_mean, f_var = la(torch.tensor(x_test, dtype=torch.float32), pred_type="glm")
    mean = f_mean.detach().numpy()[:, 0]
    variance = f_var.detach().numpy().reshape(-1) + float(la.sigma_noise) ** 2
    nll = np.mean(0.5 * np.log(2 * np.pi * variance) + 0.5 * (y_test[:, 0] - mean) ** 2 / variance)
    coverage = np.mean(np.abs(y_test[:, 0] - mean) <= 1.959964 * np.sqrt(variance))
    print(
        f"sigma {float(la.sigma_noise):.3f}, log evidence {float(la.log_marginal_likelihood()):.2f}, "
        f"test NLL {nll:.3f}, coverage 95 {coverage:.3f}, {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
