"""laplace-torch's side of the benchmark: python cases_peer.py 'SPEC-JSON' -> JSON on the last line.

The same SPEC as cases_ours.py. Prior tuning is laplace-torch's own
``optimize_prior_precision(method="marglik")`` (100 Adam steps); with the noise too, the loop of
laplace-torch's README (Adam on the log prior precision and log noise, 100 steps, learning rate 0.1).
"""

import json
import resource
import sys

import numpy as np
import torch
from architectures_torch import build as build_architecture
from laplace import Laplace
from timing import timed
from torch.utils.data import DataLoader, TensorDataset

BATCH, N_PREDICT, HYPER_STEPS = 128, 540, 100


def build_mlp(problem):
    n_layers = len([k for k in problem.files if k.startswith("kernel_")])
    layers = []
    for i in range(n_layers):
        kernel, bias = problem[f"kernel_{i}"], problem[f"bias_{i}"]
        linear = torch.nn.Linear(*kernel.shape)
        linear.weight.data = torch.tensor(kernel.T.copy())
        linear.bias.data = torch.tensor(bias.copy())
        layers += [linear, torch.nn.Tanh()] if i < n_layers - 1 else [linear]
    return torch.nn.Sequential(*layers)


def build(spec, problem, dtype):
    if "kernel_0" in problem.files:
        return build_mlp(problem).to(dtype)
    model = build_architecture(spec["problem"].removeprefix("problem_")).to(dtype)
    state = {k.removeprefix("torch."): torch.tensor(problem[k]) for k in problem.files if k.startswith("torch.")}
    model.load_state_dict(state)
    return model.eval()


def as_inputs(array, dtype):
    if array.dtype.kind == "i":
        return torch.tensor(array)
    tensor = torch.tensor(array, dtype=dtype)
    return tensor.permute(0, 3, 1, 2) if tensor.ndim == 4 else tensor  # images: channels first


def predictive(la, x):
    """Classification probabilities, or regression mean and variance side by side, as lists.

    In batches of ``BATCH``, as laplace-torch's users loop over a test loader (on the LSTM, 400
    points at once need more than 24 GB).
    """
    return torch.cat([predictive_batch(la, batch) for batch in x.split(BATCH)]).tolist()


def predictive_batch(la, x):
    if la.likelihood in ("regression", "reward_modeling"):  # a reward model's items: mean, variance
        mean, variance = la(x, pred_type="glm")
        return torch.cat([mean, variance.reshape(len(x), -1)], dim=1).detach()
    return la(x, pred_type="glm", link_approx="probit").detach()


def tune_with_noise(la, prior, dtype):
    """The README's loop: Adam on (log prior precision, log sigma)."""
    n_prior = la.n_layers if prior == "layerwise" else 1
    log_prior = torch.zeros(n_prior, dtype=dtype, requires_grad=True)
    log_sigma = torch.zeros(1, dtype=dtype, requires_grad=True)
    optimiser = torch.optim.Adam([log_prior, log_sigma], lr=1e-1)
    for _ in range(HYPER_STEPS):
        optimiser.zero_grad()
        (-la.log_marginal_likelihood(log_prior.exp(), log_sigma.exp())).backward()
        optimiser.step()
    la.prior_precision, la.sigma_noise = log_prior.detach().exp(), log_sigma.detach().exp()


def main(spec):
    torch.set_num_threads(2)
    dtype = {"float32": torch.float32, "float64": torch.float64}[spec["dtype"]]
    problem = np.load(spec["path"])
    model = build(spec, problem, dtype)
    x, y = as_inputs(problem["x_train"], dtype), torch.tensor(problem["y_train"])
    if spec["problem"] == "problem_reward":
        likelihood = "reward_modeling"
    else:
        likelihood = "regression" if y.is_floating_point() else "classification"
    y = y.to(dtype) if likelihood == "regression" else y
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    x_test = as_inputs(problem["x_test"][:N_PREDICT], dtype)

    def fit():
        subset = spec.get("subset", "all")
        la = Laplace(model, likelihood, subset_of_weights=subset, hessian_structure=spec["structure"])
        la.fit(loader, progress_bar=False)
        return la

    def tune(la):
        la.prior_precision, la.sigma_noise = 1.0, 1.0
        if spec.get("noise"):
            tune_with_noise(la, spec.get("prior", "scalar"), dtype)
        else:
            la.optimize_prior_precision(method="marglik", prior_structure=spec.get("prior", "scalar"))
        return la

    def pipeline():
        la = tune(fit())
        predictive(la, x_test)
        return la

    out = {}
    if spec["op"] == "fit":
        out["first"], out["median"], la = timed(fit, spec["repeats"])
    elif spec["op"] == "pipeline":
        out["first"], out["median"], la = timed(pipeline, spec["repeats"])
    else:
        la = fit()
    if spec["op"] == "predict":
        out["first"], out["median"], _ = timed(lambda: predictive(la, x_test), spec["repeats"])
    if spec["op"] == "tune":
        out["first"], out["median"], _ = timed(lambda: tune(la), spec["repeats"])
    if spec["op"] in ("tune", "pipeline"):
        with torch.no_grad():
            out["tuned_log_marglik"] = float(la.log_marginal_likelihood())
        out["tuned_prior"] = np.atleast_1d(la.prior_precision.detach().numpy()).tolist()
        out["tuned_sigma"] = float(la.sigma_noise)
    # at prior precision 1 and unit noise: log_marginal_likelihood(prior) also sets the prior
    la.prior_precision, la.sigma_noise = 1.0, 1.0
    out["predictive"] = predictive(la, x_test[:50])
    with torch.no_grad():
        out["log_marglik_1"] = float(la.log_marginal_likelihood(torch.tensor(1.0, dtype=dtype)))
        out["log_marglik_5"] = float(la.log_marginal_likelihood(torch.tensor(5.0, dtype=dtype)))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
