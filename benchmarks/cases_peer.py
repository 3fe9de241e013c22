"""laplace-torch's side of the benchmark: python cases_peer.py CASE DTYPE PROBLEM REPEATS -> JSON."""

import json
import resource
import sys

import numpy as np
import torch
from laplace import Laplace
from timing import timed
from torch.utils.data import DataLoader, TensorDataset

BATCH, N_PREDICT = 128, 540


def build(problem, dtype):
    n_layers = len([k for k in problem.files if k.startswith("kernel_")])
    layers = []
    for i in range(n_layers):
        kernel, bias = problem[f"kernel_{i}"], problem[f"bias_{i}"]
        linear = torch.nn.Linear(*kernel.shape)
        linear.weight.data = torch.tensor(kernel.T.copy())
        linear.bias.data = torch.tensor(bias.copy())
        layers += [linear, torch.nn.Tanh()] if i < n_layers - 1 else [linear]
    return torch.nn.Sequential(*layers).to(dtype)


def main(case, dtype_name, path, repeats):
    torch.set_num_threads(2)
    dtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
    problem = np.load(path)
    model = build(problem, dtype)
    x, y = torch.tensor(problem["x_train"], dtype=dtype), torch.tensor(problem["y_train"])
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    x_test = torch.tensor(problem["x_test"][:N_PREDICT], dtype=dtype)
    structure = {
        "fit_full": "full",
        "fit_diag": "diag",
        "fit_kron": "kron",
        "predict_glm": "full",
        "tune_prior": "full",
    }[case]

    def fit():
        la = Laplace(model, "classification", subset_of_weights="all", hessian_structure=structure)
        la.fit(loader, progress_bar=False)
        return la

    out = {}
    if case.startswith("fit"):
        first, median, la = timed(fit, repeats)
    else:
        la = fit()
    if case == "predict_glm":
        first, median, _ = timed(lambda: la(x_test, pred_type="glm", link_approx="probit"), repeats)
    if case == "tune_prior":

        def tune():
            la.prior_precision = 1.0
            la.optimize_prior_precision(method="marglik", progress_bar=False)
            return float(la.prior_precision)

        first, median, _ = timed(tune, repeats)
        out["tuned_prior"] = float(la.prior_precision)
        out["tuned_log_marglik"] = float(la.log_marginal_likelihood())
        la.prior_precision = 1.0
    # first, at prior precision 1: laplace-torch's log_marginal_likelihood(prior) sets the prior
    out["probs"] = la(x_test[:50], pred_type="glm", link_approx="probit").detach().numpy().tolist()
    with torch.no_grad():
        out["log_marglik_1"] = float(la.log_marginal_likelihood(torch.tensor(1.0, dtype=dtype)))
        out["log_marglik_5"] = float(la.log_marginal_likelihood(torch.tensor(5.0, dtype=dtype)))
    out.update(first=first, median=median, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
