"""lt.fit_laplace against pymc-extras' fit_laplace: the same models and data, agreement and time.

Each side runs in its own process and environment; the driver writes docs/benchmarks_models.md.

    python benchmarks/models_vs_pymc.py --ours .venv/bin/python --peer .venv-pymc/bin/python

The peer environment: ``python3 -m venv .venv-pymc && .venv-pymc/bin/pip install pymc-extras``.
Models (data generated identically on both sides from a seed):

* logistic regression, 2,000 examples, 10 coefficients with N(0, 2) priors;
* linear regression with unknown noise, 500 examples, 5 coefficients and an intercept with
  N(0, 10) priors, sigma ~ HalfNormal(1).

pymc-extras optimises without the Jacobian (the constrained MAP) and moves sigma to log space;
laplace-tf runs with ``jacobian=False`` and moves sigma by softplus. At the shared mode the
coefficients' covariance block does not depend on how sigma is parameterised, so the
coefficients' means and covariances are compared, and sigma's constrained mode.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPEATS = 3
OUT = Path(__file__).parent.parent / "docs" / "benchmarks_models.md"


def data(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "logistic":
        x = rng.normal(size=(2000, 10))
        y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-x @ np.linspace(-1, 1, 10)))).astype(float)
        return x, y
    x = rng.normal(size=(500, 5))
    return x, 0.5 + x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.7 * rng.normal(size=500)


def ours(name: str) -> dict:
    import tensorflow as tf
    import tensorflow_probability as tfp

    import laplace_tf as lt

    tfd = tfp.distributions
    x, y = data(name)
    if name == "logistic":
        model = tfd.JointDistributionNamed(
            dict(
                beta=tfd.Sample(tfd.Normal(np.float64(0), np.float64(2)), 10),
                y=lambda beta: tfd.Independent(tfd.Bernoulli(logits=tf.linalg.matvec(x, beta), dtype=tf.float64), 1),
            )
        )
    else:
        model = tfd.JointDistributionNamed(
            dict(
                intercept=tfd.Normal(np.float64(0), np.float64(10)),
                beta=tfd.Sample(tfd.Normal(np.float64(0), np.float64(10)), 5),
                sigma=tfd.HalfNormal(np.float64(1)),
                y=lambda intercept, beta, sigma: tfd.Independent(
                    tfd.Normal(intercept[..., None] + tf.linalg.matvec(x, beta), sigma[..., None]), 1
                ),
            )
        )
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = lt.fit_laplace(model, observed={"y": y}, jacobian=False, num_draws=500, seed=0)
        seconds.append(time.perf_counter() - start)
    rows = result.row_names
    keep = [i for i, row in enumerate(rows) if not row.startswith("sigma")]
    output = {
        "rows": [rows[i] for i in keep],
        "mean": result.mean.numpy()[keep].tolist(),
        "covariance": result.covariance.numpy()[np.ix_(keep, keep)].tolist(),
        "seconds": seconds,
    }
    if "sigma" in result.mode:
        output["sigma"] = float(result.mode["sigma"])
    return output


def peer(name: str, method: str) -> dict:
    import pymc as pm
    import pymc_extras as pmx

    x, y = data(name)
    with pm.Model() as model:
        if name == "logistic":
            beta = pm.Normal("beta", 0, 2, shape=10)
            pm.Bernoulli("y", logit_p=pm.math.dot(x, beta), observed=y)
        else:
            intercept = pm.Normal("intercept", 0, 10)
            beta = pm.Normal("beta", 0, 10, shape=5)
            sigma = pm.HalfNormal("sigma", 1)
            pm.Normal("y", intercept + pm.math.dot(x, beta), sigma, observed=y)
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        idata = pmx.fit_laplace(model=model, optimize_method=method, draws=500, progressbar=False, random_seed=0)
        seconds.append(time.perf_counter() - start)
    fit = idata.fit
    rows = [str(r) for r in fit["rows"].values]
    keep = [i for i, row in enumerate(rows) if "sigma" not in row]
    covariance = np.asarray(fit["covariance_matrix"].values)
    output = {
        "rows": [rows[i] for i in keep],
        "mean": np.asarray(fit["mean_vector"].values)[keep].tolist(),
        "covariance": covariance[np.ix_(keep, keep)].tolist(),
        "seconds": seconds,
    }
    if name != "logistic":
        log_sigma = float(np.asarray(fit["mean_vector"].values)[rows.index(next(r for r in rows if "sigma" in r))])
        output["sigma"] = float(np.exp(log_sigma))
    return output


def run_side(python: str, side: str, name: str, method: str = "BFGS") -> dict:
    command = [python, __file__, "--side", side, "--model", name, "--method", method]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions(python: str, modules: str) -> str:
    code = f"import importlib; print(', '.join(m + ' ' + importlib.import_module(m).__version__ for m in {modules!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def drive(ours_python: str, peer_python: str) -> None:
    lines = [
        "# fit_laplace against pymc-extras",
        "",
        "Generated by `benchmarks/models_vs_pymc.py` (see its docstring for the models). Times are the",
        f"median of {REPEATS} calls of each package's `fit_laplace` in one process (the first call",
        "includes compilation and is shown apart), 500 draws each.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        f"{versions(ours_python, ['tensorflow', 'tensorflow_probability'])}; "
        f"{versions(peer_python, ['pymc', 'pymc_extras', 'pytensor'])}.",
        "",
        "| model | peer's optimize_method | max abs. difference of means | of covariances (rel.) "
        "| sigma mode (ours / peer) | first call: ours / peer | warm (median): ours / peer |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("logistic", "linear"):
        a = run_side(ours_python, "ours", name)
        for method in ("BFGS", "trust-ncg"):
            b = run_side(peer_python, "peer", name, method)
            assert a["rows"] == b["rows"], (a["rows"], b["rows"])
            mean_gap = np.max(np.abs(np.subtract(a["mean"], b["mean"])))
            cov_a, cov_b = np.asarray(a["covariance"]), np.asarray(b["covariance"])
            cov_gap = np.max(np.abs(cov_a - cov_b)) / np.max(np.abs(cov_b))
            sigma = f"{a['sigma']:.6f} / {b['sigma']:.6f}" if "sigma" in a else "-"
            first = f"{a['seconds'][0]:.2f} s / {b['seconds'][0]:.2f} s"
            warm_a, warm_b = np.median(a["seconds"][1:]), np.median(b["seconds"][1:])
            warm = f"{warm_a:.2f} s / {warm_b:.2f} s (ratio {warm_a / warm_b:.2f})"
            lines.append(f"| {name} | {method} | {mean_gap:.1e} | {cov_gap:.1e} | {sigma} | {first} | {warm} |")
    lines += [
        "",
        "With `BFGS` (its default) pymc-extras takes the covariance from scipy's BFGS running estimate",
        "of the inverse Hessian, which is only approximate (the covariance column); with `trust-ncg` it",
        "computes the Hessian from exact Hessian-vector products. laplace-tf always takes the exact",
        "Hessian by nested tapes; the tests check it against closed forms and a Newton solve.",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["ours", "peer"])
    parser.add_argument("--model", choices=["logistic", "linear"])
    parser.add_argument("--method", default="BFGS", help="the peer's optimize_method")
    parser.add_argument("--ours", default=sys.executable)
    parser.add_argument("--peer", default=".venv-pymc/bin/python")
    args = parser.parse_args()
    if args.side is None:
        drive(args.ours, args.peer)
    else:
        print(json.dumps(ours(args.model) if args.side == "ours" else peer(args.model, args.method)))


if __name__ == "__main__":
    main()
