"""Runs laplace-tf and laplace-torch side by side and writes docs/benchmarks.md.

Usage (from the repository root, with the peer set up as in ../shared/BENCHMARKING.md):

    python benchmarks/run.py --ours .venv/bin/python --peer .venv-peer/bin/python

Each (side, case, dtype) runs in its own process, so peak memory is per case and TensorFlow and
PyTorch never share a process. Agreement (log marginal likelihood, predictive) is checked
before any time is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
BOTH, FLOAT32 = ("float32", "float64"), ("float32",)
# (case, problem, label, dtypes, repeats or None for --repeats): the slowest cases run once after
# warm-up and in float32 only, to keep the whole run near a quarter of an hour on 2 cores.
CASES = [
    ("fit_full", "problem_50", "full GGN fit, 64-50-10 MLP (3,760 params)", BOTH, None),
    ("fit_diag", "problem_50", "diag GGN fit, 64-50-10 MLP", BOTH, None),
    ("fit_diag", "problem_300-300", "diag GGN fit, 64-300-300-10 MLP (112,810 params)", FLOAT32, 1),
    ("fit_kron", "problem_50", "kron GGN fit, 64-50-10 MLP", BOTH, None),
    ("fit_kron", "problem_300-300", "kron GGN fit, 64-300-300-10 MLP", BOTH, None),
    ("predict_glm", "problem_50", "GLM probit predictive, 540 points, full", BOTH, None),
    ("tune_prior", "problem_50", "marglik prior tuning (scalar), full", FLOAT32, 1),
]


def run(python: str, script: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([python, str(HERE / script), *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine(ours: str, peer: str) -> str:
    cpu = next(
        (
            line.split(":")[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = run_versions(
        ours,
        "import tensorflow as t, keras, tensorflow_probability as p; "
        "print(f'tensorflow {t.__version__}, keras {keras.__version__}, tfp {p.__version__}')",
    )
    peer_versions = run_versions(
        peer,
        "import torch, laplace, importlib.metadata as m; "
        "print(f'torch {torch.__version__}, laplace-torch {m.version(\"laplace-torch\")}')",
    )
    return f"{os.cpu_count()} cores, {cpu}; {versions}; {peer_versions}; Python {platform.python_version()}"


def run_versions(python: str, code: str) -> str:
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ours", default=".venv/bin/python")
    parser.add_argument("--peer", default=".venv-peer/bin/python")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/laplace-tf-bench"))
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    for hidden in ("50", "300-300"):
        if not (args.data / f"problem_{hidden}.npz").exists():
            subprocess.run(
                [args.peer, str(HERE / "make_problem.py"), hidden, str(args.data / f"problem_{hidden}.npz")], check=True
            )
    rows = []
    for dtype in BOTH:
        for case, problem, label, dtypes, repeats in CASES:
            if dtype not in dtypes:
                continue
            path = str(args.data / f"{problem}.npz")
            times = str(repeats or args.repeats)
            ours = run(args.ours, "cases_ours.py", case, dtype, path, times)
            peer = run(args.peer, "cases_peer.py", case, dtype, path, times)
            agreement = {
                "log_marglik": max(abs(ours[k] - peer[k]) / abs(peer[k]) for k in ("log_marglik_1", "log_marglik_5")),
                "probs": float(np.max(np.abs(np.array(ours["probs"]) - np.array(peer["probs"])))),
            }
            rows.append({"case": label, "dtype": dtype, "ours": ours, "peer": peer, "agreement": agreement})
            print(
                f"{dtype} {label}: ours {ours['median']:.3f}s peer {peer['median']:.3f}s agreement {agreement}",
                file=sys.stderr,
            )
    hessian = {
        dtype: run(args.ours, "cases_ours.py", "hessian", dtype, "-", str(args.repeats))
        for dtype in ("float32", "float64")
    }
    args.out.write_text(render(rows, hessian, machine(args.ours, args.peer), args.repeats))
    (HERE / "results.json").write_text(json.dumps({"rows": rows, "hessian": hessian}, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)


READING_NOTES = """
## Reading the results

- Prior tuning: laplace-tf eigendecomposes the full curvature once per fit and then evaluates the
  evidence in O(P) per L-BFGS step; the warm-up (*first*) run pays for the eigendecomposition and
  the timed runs reuse it. Compare the *first* columns for one tuning from scratch. laplace-torch
  takes 100 Adam steps, each with a Cholesky factorisation.
- Peak memory includes each framework's own footprint (TensorFlow's is about 0.6 GB), which
  dominates the small cases.
- Agreement is at the precision of the dtype: float64 agrees to 1e-10 or better everywhere.
"""


def render(rows: list[dict], hessian: dict, machine_line: str, repeats: int) -> str:
    lines = [
        "# Benchmarks: laplace-tf against laplace-torch",
        "",
        "Produced by `benchmarks/run.py` (see ../shared/BENCHMARKING.md for the peer's setup). Same data",
        "(scikit-learn digits, standardised; 1,257 training points), same architecture, same trained weights,",
        f"batch size 128, 2 threads a side, each case in its own process. Times are medians of {repeats} runs",
        "(one run for the 112k-parameter diag fit and for prior tuning, whose peer side takes minutes) after",
        "one warm-up run; *first* is that warm-up: for laplace-tf it includes tracing the `tf.function`s",
        "(once per model and configuration: compiled functions are cached per model), for laplace-torch its",
        "own first-call costs. Every timed fit builds a new `Laplace` on the same model.",
        "Ratio = ours / peer (below 1 means laplace-tf is faster).",
        "",
        f"Machine: {machine_line}.",
        "",
        "Scale (a 2.4-million-parameter network, kron and last-layer, time and peak memory) is measured",
        "by `benchmarks/scale.py`; its results are in [structures.md](structures.md).",
        "",
        "## Agreement (checked before timing)",
        "",
        "| case | dtype | log marginal likelihood, max rel. difference | predictive probabilities, max abs diff. |",
        "|---|---|---|---|",
    ]
    for row in rows:
        a = row["agreement"]
        lines.append(f"| {row['case']} | {row['dtype']} | {a['log_marglik']:.1e} | {a['probs']:.1e} |")
    lines += [
        "",
        "## Time and memory",
        "",
        "| case | dtype | laplace-tf median (first) | laplace-torch median (first) | ratio | peak RSS ours/peer (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        o, p = row["ours"], row["peer"]
        lines.append(
            f"| {row['case']} | {row['dtype']} | {o['median']:.3f} s ({o['first']:.2f} s) | {p['median']:.3f} s "
            f"({p['first']:.2f} s) | **{o['median'] / p['median']:.2f}** | "
            f"{o['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} |"
        )
    tuned = [r for r in rows if "tuning" in r["case"]]
    if tuned:
        lines += ["", "Prior tuning reaches (evidence at the tuned prior):", ""]
        for row in tuned:
            o, p = row["ours"], row["peer"]
            lines.append(
                f"- {row['dtype']}: laplace-tf prior {o['tuned_prior']:.4g}, log evidence {o['tuned_log_marglik']:.3f} "
                f"(L-BFGS to convergence); laplace-torch prior {p['tuned_prior']:.4g}, log evidence "
                f"{p['tuned_log_marglik']:.3f} (100 Adam steps)."
            )
    lines += [
        "",
        "## `lt.hessian` against TensorFlow's own recipes",
        "",
        "Hessian of a 400-parameter softmax-regression loss (64 examples).",
        "",
        "| dtype | method | median (first) | ratio to the eager recipe | max abs difference to tf.hessians |",
        "|---|---|---|---|---|",
    ]
    for dtype, result in hessian.items():
        eager = result["hessian"]["eager recipe"]["median"]
        for name, item in result["hessian"].items():
            lines.append(
                f"| {dtype} | {name} | {item['median'] * 1e3:.1f} ms ({item['first'] * 1e3:.0f} ms) | "
                f"{item['median'] / eager:.2f} | {item['max_abs_diff']:.1e} |"
            )
    return "\n".join(lines) + "\n" + READING_NOTES


if __name__ == "__main__":
    main()
