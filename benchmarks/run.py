"""Runs laplace-tf and laplace-torch side by side and writes docs/benchmarks.md.

Usage (from the repository root, with the peer set up as in ../shared/BENCHMARKING.md):

    python benchmarks/run.py --ours .venv/bin/python --peer .venv-peer/bin/python

Each (side, case, dtype) runs in its own process, so peak memory is per case and TensorFlow and
PyTorch never share a process; the cold time of a case is the median of its first call in three
fresh processes. Agreement (log marginal likelihood, predictive) is checked before any time is
reported. About 40 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
BOTH, FLOAT32 = ("float32", "float64"), ("float32",)


def case(label: str, op: str, problem: str, structure: str, dtypes=FLOAT32, **options) -> dict:
    """A benchmark case. ``repeats``: warm runs (None: --repeats); ``cold``: fresh processes for
    the cold median (the slowest peer cases run once); ``peer_unsupported``: laplace-torch
    raises on it or runs out of memory (the table says so); ``subset``: ``subset_of_weights``
    ("all" unless given)."""
    return {"label": label, "op": op, "problem": problem, "structure": structure, "dtypes": dtypes, **options}


MLP, BIG, LAST = "64-50-10 MLP", "64-300-300-10 MLP", "last_layer"
CASES = [
    case(f"full GGN fit, {MLP} (3,760 params)", "fit", "50", "full", BOTH),
    case(f"diag GGN fit, {MLP}", "fit", "50", "diag", BOTH),
    case(f"diag GGN fit, {BIG} (112,810 params)", "fit", "300-300", "diag", repeats=1, cold=1),
    case(f"kron GGN fit, {MLP}", "fit", "50", "kron", BOTH),
    case(f"kron GGN fit, {BIG}", "fit", "300-300", "kron", BOTH),
    case("GLM probit predictive, 540 points, full", "predict", "50", "full", BOTH),
    case("GLM probit predictive, 540 points, kron", "predict", "50", "kron"),
    case("marglik prior tuning (scalar), full", "tune", "50", "full", repeats=1, cold=1),
    case("marglik prior tuning (scalar), diag", "tune", "50", "diag"),
    case("marglik prior tuning (layerwise), diag", "tune", "50", "diag", prior="layerwise"),
    case("marglik prior tuning (scalar), kron", "tune", "50", "kron"),
    case("marglik prior tuning (layerwise), kron", "tune", "50", "kron", prior="layerwise"),
    case("regression: prior and noise (scalar), diag", "tune", "regression", "diag", noise=True),
    case("regression: prior and noise (layerwise), diag", "tune", "regression", "diag", prior="layerwise", noise=True),
    case("regression: prior and noise (scalar), kron", "tune", "regression", "kron", noise=True),
    case("regression: prior and noise (layerwise), kron", "tune", "regression", "kron", prior="layerwise", noise=True),
    case("CNN (2 Conv2D, 3,818 params): kron fit", "fit", "cnn", "kron"),
    case("CNN: diag fit", "fit", "cnn", "diag"),
    case("CNN: kron GLM predictive", "predict", "cnn", "kron"),
    case("CNN: diag GLM predictive", "predict", "cnn", "diag"),
    case("CNN: kron prior tuning (scalar)", "tune", "cnn", "kron"),
    case("CNN, last layer (2,570 params; laplace-torch's default): kron fit", "fit", "cnn", "kron", subset=LAST),
    case("CNN, last layer: kron GLM predictive", "predict", "cnn", "kron", subset=LAST),
    case("CNN, last layer: kron prior tuning (scalar)", "tune", "cnn", "kron", subset=LAST),
    case("CNN, last layer: full fit", "fit", "cnn", "full", subset=LAST),
    case("CNN, last layer: full GLM predictive", "predict", "cnn", "full", subset=LAST),
    case("CNN, last layer: full prior tuning (scalar)", "tune", "cnn", "full", subset=LAST, repeats=1, cold=1),
    case(
        "CNN, 100 classes (32x32x3 images, 81,268 params): kron fit",
        "fit",
        "cnn100",
        "kron",
        repeats=1,
        cold=1,
        peer_unsupported=True,
    ),
    case("CNN, 100 classes: diag fit", "fit", "cnn100", "diag", repeats=1, cold=1, peer_unsupported=True),
    case("LSTM (9,924 params): diag fit", "fit", "lstm", "diag"),
    case("LSTM: diag GLM predictive", "predict", "lstm", "diag"),
    case("LSTM: diag prior tuning (scalar)", "tune", "lstm", "diag"),
    case("LSTM: kron fit", "fit", "lstm", "kron", peer_unsupported=True),
    case("Transformer encoder (10,276 params): diag fit", "fit", "transformer", "diag"),
    case("Transformer: diag GLM predictive", "predict", "transformer", "diag"),
    case("Transformer: diag prior tuning (scalar)", "tune", "transformer", "diag"),
    case("Transformer: kron fit", "fit", "transformer", "kron", peer_unsupported=True),
    case("reward model (Bradley-Terry, 64-32-1, 1,000 pairs): kron fit", "fit", "reward", "kron", BOTH),
    case("reward model: diag fit", "fit", "reward", "diag", BOTH),
    case("reward model: kron GLM reward mean and variance", "predict", "reward", "kron", BOTH),
    case("reward model: diag GLM reward mean and variance", "predict", "reward", "diag", BOTH),
    case("reward model: kron prior tuning (scalar)", "tune", "reward", "kron"),
    case("reward model: diag prior tuning (scalar)", "tune", "reward", "diag"),
]
PIPELINES = [  # Laplace + fit + scalar marglik tuning + GLM probit predictive
    {"label": "kron", "structure": "kron", "problem": "50"},
    {"label": "diag", "structure": "diag", "problem": "50"},
    {"label": "full", "structure": "full", "problem": "50"},
    {"label": "last-layer kron, CNN (laplace-torch's defaults)", "structure": "kron", "problem": "cnn", "subset": LAST},
]


def run(python: str, script: str, spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [python, str(HERE / script), json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} {spec} failed:\n{done.stderr[-3000:]}\n{failure(done)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def failure(done: subprocess.CompletedProcess) -> str:
    """One line saying why a case's process failed: out of memory, or its last error line."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if done.returncode == -signal.SIGKILL:
        return f"killed by the system: out of memory (the machine has {memory:.0f} GiB)"
    asked = re.search(r"tried to allocate (\d+) bytes", done.stderr)
    if asked:
        return f"out of memory: tried to allocate {int(asked[1]) / 2**30:.0f} GiB at once"
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def run_case(python: str, script: str, spec: dict, cold_runs: int) -> dict:
    """The warm run (its first call is one cold sample) and ``cold_runs - 1`` first-call-only runs."""
    result = run(python, script, spec)
    firsts = [result["first"]] + [run(python, script, {**spec, "repeats": 0})["first"] for _ in range(cold_runs - 1)]
    result["cold"] = float(np.median(firsts))
    return result


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


def agreement(ours: dict, peer: dict) -> dict:
    """Relative evidence and absolute predictive differences; a reward model's kron is compared with
    its input factors per pair, laplace-torch's convention (``per_pair``, see cases_ours.py)."""
    ours = ours.get("per_pair", ours)
    return {
        "log_marglik": max(abs(ours[k] - peer[k]) / abs(peer[k]) for k in ("log_marglik_1", "log_marglik_5")),
        "predictive": float(np.max(np.abs(np.array(ours["predictive"]) - np.array(peer["predictive"])))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ours", default=".venv/bin/python")
    parser.add_argument("--peer", default=".venv-peer/bin/python")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", type=int, default=3, help="fresh processes per cold median")
    parser.add_argument("--data", type=Path, default=Path("/tmp/laplace-tf-bench"))
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "benchmarks.md")
    parser.add_argument("--render-only", action="store_true", help="rewrite --out from results.json")
    parser.add_argument(
        "--only",
        help="re-measure the cases whose label contains this ('pipeline': the cold pipelines; 'model_calls': "
        "every model's own first calls), keep the rest",
    )
    args = parser.parse_args()
    if args.render_only:
        saved = json.loads((HERE / "results.json").read_text())
        args.out.write_text(render(saved["results"], saved["machine"], args.repeats))
        return
    if args.only:
        remeasure(args)
        return
    make_problems({c["problem"] for c in CASES}, args)
    rows = []
    for dtype in BOTH:
        for item in CASES:
            if dtype in item["dtypes"]:
                rows.append(measure(item, dtype, args))
    pipelines = [measure_pipeline(item, args) for item in PIPELINES]
    model_calls = {name: measure_model_calls(name, args) for name in sorted({c["problem"] for c in CASES})}
    hessian = {
        dtype: run(args.ours, "cases_ours.py", {"op": "hessian", "dtype": dtype, "repeats": args.repeats})
        for dtype in BOTH
    }
    results = {"rows": rows, "pipelines": pipelines, "model_calls": model_calls, "hessian": hessian}
    machine_line = machine(args.ours, args.peer)
    (HERE / "results.json").write_text(json.dumps({"results": results, "machine": machine_line}, indent=1))
    args.out.write_text(render(results, machine_line, args.repeats))
    print(f"wrote {args.out}", file=sys.stderr)


def make_problems(names: set[str], args: argparse.Namespace) -> None:
    args.data.mkdir(parents=True, exist_ok=True)
    for name in sorted(names):
        if not (args.data / f"problem_{name}.npz").exists():
            subprocess.run(
                [args.peer, str(HERE / "make_problem.py"), name, str(args.data / f"problem_{name}.npz")],
                check=True,
                cwd=HERE,
            )


def remeasure(args: argparse.Namespace) -> None:
    """Measures the cases matching ``--only`` and replaces their rows in results.json (in case order)."""
    saved = json.loads((HERE / "results.json").read_text())
    pipelines = {row.get("label", row["structure"]): row for row in saved["results"]["pipelines"]}
    chosen_pipelines = [item for item in PIPELINES if args.only == "pipeline" or args.only in item["label"]]
    make_problems({item["problem"] for item in chosen_pipelines}, args)
    for item in chosen_pipelines:
        pipelines[item["label"]] = measure_pipeline(item, args)
    saved["results"]["pipelines"] = [pipelines[item["label"]] for item in PIPELINES if item["label"] in pipelines]
    if args.only == "model_calls":
        problems = sorted({c["problem"] for c in CASES})
        saved["results"]["model_calls"] = {name: measure_model_calls(name, args) for name in problems}
    chosen = [c for c in CASES if args.only in c["label"]]
    make_problems({c["problem"] for c in chosen}, args)
    fresh = {(row["case"], row["dtype"]): row for c in chosen for row in measure_dtypes(c, args)}
    old = {(row["case"], row["dtype"]): row for row in saved["results"]["rows"]}
    order = [(c["label"], dtype) for dtype in BOTH for c in CASES if dtype in c["dtypes"]]
    saved["results"]["rows"] = [fresh.get(key, old.get(key)) for key in order if key in fresh or key in old]
    for name in {c["problem"] for c in chosen}:
        saved["results"]["model_calls"][name] = measure_model_calls(name, args)
    (HERE / "results.json").write_text(json.dumps(saved, indent=1))
    args.out.write_text(render(saved["results"], saved["machine"], args.repeats))


def measure_dtypes(item: dict, args: argparse.Namespace) -> list[dict]:
    return [measure(item, dtype, args) for dtype in BOTH if dtype in item["dtypes"]]


def problem_spec(name: str, dtype: str, args: argparse.Namespace) -> dict:
    return {"problem": f"problem_{name}", "path": str(args.data / f"problem_{name}.npz"), "dtype": dtype}


def measure(item: dict, dtype: str, args: argparse.Namespace) -> dict:
    spec = {
        "op": item["op"],
        "structure": item["structure"],
        "prior": item.get("prior", "scalar"),
        "noise": item.get("noise", False),
        "subset": item.get("subset", "all"),
        "repeats": item.get("repeats") or args.repeats,
        **problem_spec(item["problem"], dtype, args),
    }
    cold_runs = item.get("cold", args.cold)
    ours = run_case(args.ours, "cases_ours.py", spec, cold_runs)
    row = {"case": item["label"], "dtype": dtype, "problem": item["problem"], "op": item["op"], "ours": ours}
    try:
        row["peer"] = run_case(args.peer, "cases_peer.py", spec, cold_runs)
        row["agreement"] = agreement(ours, row["peer"])
    except RuntimeError as error:
        if not item.get("peer_unsupported"):
            raise
        row["peer_error"] = str(error).strip().splitlines()[-1]
    print(f"{dtype} {item['label']}: ours {ours['median']:.3f}s {row.get('agreement')}", file=sys.stderr)
    return row


def measure_model_calls(name: str, args: argparse.Namespace) -> dict:
    """The model's own first predict and first training step: each the median over ``--cold``
    fresh processes (one process's first call moves by a fifth or more)."""
    spec = problem_spec(name, "float32", args)

    def first(op: str) -> float:
        return float(
            np.median([run(args.ours, "cases_ours.py", {"op": op, **spec})["first"] for _ in range(args.cold)])
        )

    return {"first": first("model_predict"), "train_first": first("model_train_step")}


def measure_pipeline(item: dict, args: argparse.Namespace) -> dict:
    spec = {
        "op": "pipeline",
        "structure": item["structure"],
        "subset": item.get("subset", "all"),
        "repeats": 0,
        **problem_spec(item["problem"], "float32", args),
    }
    sides = {}
    for side, python, script in (("ours", args.ours, "cases_ours.py"), ("peer", args.peer, "cases_peer.py")):
        runs = [run(python, script, spec) for _ in range(args.cold)]
        sides[side] = {**runs[0], "cold": float(np.median([r["first"] for r in runs]))}
    cold = f"ours {sides['ours']['cold']:.2f}s peer {sides['peer']['cold']:.2f}s"
    print(f"pipeline {item['label']}: {cold}", file=sys.stderr)
    return {"label": item["label"], "structure": item["structure"], **sides}


READING_NOTES = """
## Reading the results

- *cold* is what a script pays: the first call in a fresh process (imports done before the clock
  on both sides), the median of three processes (one for the slowest cases). For laplace-tf it
  includes tracing the `tf.function`s, for laplace-torch its own first-call costs. *warm* is the
  median of repeats after that first call in the same process (a notebook or a long job).
- Prior tuning: with a scalar or layerwise prior on `diag` or `kron` (and a scalar prior on
  `full`), laplace-tf evaluates the evidence and its gradient in closed form from the curvature's
  eigenvalues in NumPy and runs L-BFGS to convergence; laplace-torch takes 100 Adam steps
  (with the noise: the loop of its README). Where the tuned evidences differ, the higher one is
  the better optimum.
- Peak memory includes each framework's own footprint (TensorFlow's is about 0.6 GB), which
  dominates the small cases.
- Agreement is at the precision of the dtype: float64 agrees to 1e-10 or better everywhere.
- Reward model, kron: laplace-tf's Kronecker input factor averages over the `2N` items of the
  `N` pairs, laplace-torch's divides the same sum by `N` (so its kron curvature is twice ours; ours
  is the closer to the exact GGN, see [likelihoods](likelihoods.md)). The agreement rows marked
  "A per pair" compare laplace-torch with our factors divided by the pairs instead; the timed
  runs and the tuned evidences use our default, so the two tuned kron evidences differ.
- This machine: an AMD EPYC with AVX-512, on which TensorFlow runs with oneDNN. The runs before
  this one were on an AMD EPYC with AVX2 only (TensorFlow without oneDNN), where both sides took up
  to twice as long; laplace-torch's times move as much as ours between runs, so compare ratios
  within a row, not times across runs.
- GLM predictives of `kron` and `diag`: a Dense layer on matrices anywhere in a model (an MLP's
  layers, a CNN's head, an LSTM's or a Transformer's output layer) gives `J Sigma J^T` in closed
  form from its inputs and per-output gradients, which the same backward passes give as the other
  probed layers' rows of the Jacobian; the other layers' Jacobian rows are rotated into the
  Kronecker eigenbases by one matrix product per factor (a product broadcast over the batch runs
  matrix by matrix in TensorFlow).
- `full` over all weights: the fitted posterior's Cholesky factor `L` is computed by LAPACK on the
  host (`potrf`, on the precision `s H + diag(lambda)` formed in its buffer and handed to
  TensorFlow without a copy), and a GLM predictive whitens its Jacobians, `J L^-T`, by BLAS's
  triangular solve (`trsm`) on the host: as many multiply-adds as a product with the covariance
  factor `S = L^-T`, which it never forms (`P^3/3` and a `(P, P)` buffer spared; in a fresh process
  every new `(P, P)` buffer costs its first touch). The first GLM predictive forms `L` (about
  0.14 s for the MLP's 3,760 weights, by hand), which later calls reuse, as laplace-torch reuses
  its posterior scale. Full prior tuning's first evidence takes the curvature's
  eigenvalues once (LAPACK's divide-and-conquer `syevd`); every later evaluation is `O(P)`.
- First calls: a cold `fit` or GLM `predict` pays for tracing its `tf.function` once per model and
  configuration (a second `Laplace` on the same model traces nothing, as a test checks). Every
  layer with a probe rule (Dense, EinsumDense, convolutions, Embedding, LayerNorm, BatchNorm, LSTM,
  GRU, SimpleRNN) is differentiated by backward passes of the whole batch, one per column of the
  output Hessian's square root (`K - 1` for a `K`-class softmax, whose Hessian has rank `K - 1`;
  one for a reward model, which then needs no `pfor`), seeded by the columns and vectorised over
  them with `pfor` (or, for models `pfor` cannot vectorise, on the batch tiled once per column);
  only layers without a rule (custom layers, stacked recurrent cells) are differentiated per
  example. Against the model's first predict, the MLPs' fits (but the larger one's kron fit, 1.04)
  and GLM predictives, the CNN's diag GLM predictive, the last-layer kron and full fits and kron
  GLM predictive, and the reward-model and 100-class-CNN calls are within budget (0.34-0.96); the
  small CNN's fits and kron GLM predictive and its last layer's full GLM predictive read
  1.11-1.22, the LSTM's calls 1.00-1.19 and the Transformer's 1.28-1.45 (against a first training
  step, which differentiates the network as a fit does, the LSTM's and Transformer's read
  0.90-1.15). Rows whose code did not change moved by up to 0.45 since the previous full run at
  2ed791e (the CNN's kron fit 0.96 -> 1.19, its last layer's full GLM predictive 0.77 -> 1.22,
  the Transformer's GLM predictive 1.19 -> 1.39), with the models' own first calls (the CNN's
  first predict 0.143 s then, 0.123 s now; the Transformer's 0.191 s and 0.168 s) and our cold
  times (the last layer's full GLM predictive 0.145 s and 0.207 s): one run's cold ratio near 1
  does not tell within from over budget. Where a cold ratio to laplace-torch is above 1 (the kron
  fits, the reward model's diag GLM predictive), its first call costs it 0.01-0.14 s and ours is
  mostly tracing, about as long as the model's own first call. The model's first predict and
  training step are each the median of three fresh processes. What
  remains is TensorFlow's fixed cost per compiled function (measured by hand on the previous CPU):
  building the graph op by op in Python (about 0.3 ms an op; the MLP's diag fit graph has about 160
  ops, nearly a third of them the softmax Hessian root's 45, the Transformer's about 920), its
  first run (about 0.03 s for the MLP, 0.2 s for the LSTM and the Transformer, of which Grappler's
  graph optimisation is 0.013 s and 0.11-0.13 s: turning Grappler off process-wide would take that
  off but is the user's setting, and TensorFlow has no public per-function switch; turning off
  single passes saved nothing measurable), and one eager forward pass before any work (0.02 s for
  the MLP, 0.05-0.07 s for the LSTM and the Transformer) where the fit cannot do without it: it
  counts and checks the outputs of a model whose output layer is not a `Dense` or `EinsumDense`
  without activation (a subclassed model, a final activation or layer). Other models declare their
  output count, and an affine layer gives logits by construction; there `diag`'s probes learn which
  Dense layers see one row per example (once per model and example shape) from a trace of the
  forward pass with the first batch's static shapes, which runs nothing (0.006 s for the MLP,
  0.03 s for the LSTM and the Transformer; their first diag fits 0.006-0.012 s faster, by hand,
  medians of five fresh processes against the eager pass). Tiling the
  batch once per column instead of `pfor` saves about 0.05 s on the small MLP's first fit but costs
  about 30% of its warm time, so it is kept for the models `pfor` cannot vectorise. Cold times move
  by up to 30% between processes on this shared machine.
- Last layer, laplace-torch's default (`subset_of_weights="last_layer"`; the CNN's Dense head, 256
  features and 10 classes): the fit forms its curvature from the head's features with no backward
  pass (`kron`: `A` from the features, `G = sum_n Lambda_n`; `full`: `sum_n (a_n a_n^T) (x)
  Lambda_n`; `diag` likewise), in the same compiled function the GLM predictive uses, so a
  last-layer script traces the network once. The kron fit's cold time (0.118 s) is below the
  model's own first predict (0.123 s). `full`'s GLM predictive takes `J S` as one product of the
  features with `S`; its first call forms `L` and `S` for the head's 2,570 weights, which later
  calls reuse (0.77 of its budget in the previous run, 1.22 in this one). The full rows'
  predictive agreement (2.9e-4) is
  laplace-torch's float32 error: against our float64 run its probabilities are 2.7e-4 off and ours
  5.7e-6 (by hand).
- Deeper networks (by hand on the previous CPU, not in the tables; imports before the clock): on a
  MobileNetV2 (alpha 0.35, 32x32 inputs, 403k weights, 64 images) the first `kron` fit takes 5.4 s
  (a graph of 10,528 nodes: 2.7 s to trace, 2.3 s to first run) and later ones 0.24 s, against 0.6
  s for the model's first `predict` and 12.5 s for Keras's first training step: 5.6 times the
  first-call budget. Before its depthwise convolutions were probed it took 21 s and 2.1 s. On the
  Xception-style network of Keras's "image classification from scratch" example the first `kron`
  fit takes 0.64 s (1.7 times the budget; 4.4 s before its separable convolutions were probed) and
  the first GLM predictive 1.3 s (3.3 times; 5.6 s before). On such graphs tracing and the first
  run's graph optimisation dominate.
- Many classes: the backward passes per column hold one gradient of every probed layer's output per
  column, so the columns are taken in chunks of about 1 GiB for the first batch's size (a
  `tf.while_loop`, only when one chunk would not do). By hand on the previous CPU, on a small CNN
  on 32x32x3 images with 100 classes (batches of 128), kron's fit peaked at 2.2 GB instead of 6.6
  GB and diag's at 2.5 GB instead of 9.5 GB, both faster; with 1,000 classes kron peaks at 2.9 GB.
  The "CNN, 100 classes" rows measure such a model, trained, side by side with laplace-torch, which
  runs out of this machine's 24 GiB on both (its kron fit is killed; its diag fit asks for 77 GiB
  at once); ours peak at about 2.4 GB. Their cold fits are within 1.8 s of warm (0.69-0.72 of
  their budgets).
- Every table here comes from one full run (`python benchmarks/run.py`) at 8640b9c on 2026-11-24
  (the run before it, at 2ed791e the same day, is in the git history of this page).
  `run.py --only LABEL` re-measures the cases whose label contains LABEL (`pipeline`: the cold
  pipelines, `model_calls`: the models' own first calls) and keeps the other rows.
"""


def render(results: dict, machine_line: str, repeats: int) -> str:
    rows = results["rows"]
    lines = [
        "# Benchmarks: laplace-tf against laplace-torch",
        "",
        "Produced by `python benchmarks/run.py` (see ../shared/BENCHMARKING.md for the peer's setup). Same",
        "data, same architecture, same trained weights on both sides: scikit-learn digits (standardised; 1,257",
        "training points) for the MLPs and the CNN (8x8 images), scikit-learn diabetes (309 points) for",
        "regression, 1,000 synthetic token sequences of length 16 for the LSTM and the Transformer encoder,",
        "1,000 preference pairs of digits (the larger digit preferred, Bradley-Terry) for the reward model,",
        "2,000 synthetic 32x32x3 images of 100 classes (noisy copies of a random template per class) for",
        "the many-class CNN. Batch size 128, 2 threads a side, each case in its own process. *warm* is the",
        f"median of {repeats} runs after a first one (one run for the 112k-parameter diag fit, the many-class",
        "CNN and full prior tuning, whose peer side takes minutes); *cold* is the first call in a fresh",
        "process, median of three processes (one for those).",
        "Every timed fit builds a new `Laplace` on the same model. Ratio = ours / peer (below 1 means",
        "laplace-tf is faster).",
        "",
        f"Machine: {machine_line}.",
        "",
        "Scale (a 2.4-million-parameter network, kron and last-layer, time and peak memory) is measured",
        "by `benchmarks/scale.py`; its results are in [structures.md](structures.md).",
        "",
        "## A script's whole pipeline, cold",
        "",
        "`Laplace(...)`, `fit`, `optimize_prior_precision()` (scalar marglik) and a GLM probit predictive",
        "on 540 points, timed as one step in a fresh process (imports excluded on both sides), float32,",
        "median of three processes: on the 64-50-10 MLP over all weights, and on the CNN's last layer",
        'with laplace-torch\'s defaults (`subset_of_weights="last_layer"`, `hessian_structure="kron"`).',
        "",
        "| structure | laplace-tf | laplace-torch | ratio | tuned log evidence ours / peer |",
        "|---|---|---|---|---|",
    ]
    for row in results["pipelines"]:
        o, p = row["ours"], row["peer"]
        lines.append(
            f"| {row.get('label', row['structure'])} | {o['cold']:.2f} s | {p['cold']:.2f} s | "
            f"**{o['cold'] / p['cold']:.2f}** | "
            f"{o['tuned_log_marglik']:.2f} / {p['tuned_log_marglik']:.2f} |"
        )
    lines += [
        "",
        "## Agreement (checked before timing)",
        "",
        "| case | dtype | log marginal likelihood, max rel. difference | predictive, max abs diff. |",
        "|---|---|---|---|",
    ]
    for row in rows:
        if "agreement" in row:
            a = row["agreement"]
            case_label = row["case"] + (" (A per pair, see below)" if "per_pair" in row["ours"] else "")
            lines.append(f"| {case_label} | {row['dtype']} | {a['log_marglik']:.1e} | {a['predictive']:.1e} |")
    lines += [
        "",
        "## Time and memory",
        "",
        "| case | dtype | laplace-tf warm (cold) | laplace-torch warm (cold) | ratio warm | ratio cold "
        "| peak RSS ours/peer (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        o = row["ours"]
        if "peer" not in row:
            lines.append(
                f"| {row['case']} | {row['dtype']} | {o['median']:.3f} s ({o['cold']:.2f} s) | "
                f"cannot run it: {row['peer_error'][:90]} | | | {o['peak_rss_mb']:.0f} / - |"
            )
            continue
        p = row["peer"]
        lines.append(
            f"| {row['case']} | {row['dtype']} | {o['median']:.3f} s ({o['cold']:.2f} s) | {p['median']:.3f} s "
            f"({p['cold']:.2f} s) | **{o['median'] / p['median']:.2f}** | **{o['cold'] / p['cold']:.2f}** | "
            f"{o['peak_rss_mb']:.0f} / {p['peak_rss_mb']:.0f} |"
        )
    tuned = [r for r in rows if r["op"] == "tune" and "peer" in r]
    lines += [
        "",
        "Prior tuning reaches (log evidence at the tuned hyperparameters; higher is better):",
        "",
        "| case | laplace-tf | laplace-torch |",
        "|---|---|---|",
    ]
    for row in tuned:
        o, p = row["ours"], row["peer"]
        lines.append(f"| {row['case']} | {o['tuned_log_marglik']:.3f} | {p['tuned_log_marglik']:.3f} |")
    lines += first_call_table(rows, results["model_calls"])
    lines += [
        "",
        "## `lt.hessian` against TensorFlow's own recipes",
        "",
        "Hessian of a 400-parameter softmax-regression loss (64 examples).",
        "",
        "| dtype | method | warm (first) | ratio to the eager recipe | max abs difference to tf.hessians |",
        "|---|---|---|---|---|",
    ]
    for dtype, result in results["hessian"].items():
        eager = result["hessian"]["eager recipe"]["median"]
        for name, item in result["hessian"].items():
            lines.append(
                f"| {dtype} | {name} | {item['median'] * 1e3:.1f} ms ({item['first'] * 1e3:.0f} ms) | "
                f"{item['median'] / eager:.2f} | {item['max_abs_diff']:.1e} |"
            )
    return "\n".join(lines) + "\n" + READING_NOTES


def first_call_table(rows: list[dict], model_calls: dict) -> list[str]:
    """laplace-tf's cold fit and predict against 1.5x warm plus the model's own first call."""
    lines = [
        "",
        "## First calls (laplace-tf)",
        "",
        "The cold `fit` or GLM `predict` against a budget of 1.5 times its warm time plus the model's own",
        "first call in a fresh process (the median of three processes), tracing included: Keras",
        "`model.predict` on one batch (forward only), and a Keras training step, `train_on_batch` (forward",
        "and backward, as a fit and a GLM predictive differentiate the network). Below 1 is within budget.",
        "",
        "| case | cold | warm | model's first predict / training step | cold / budget (predict) | "
        "cold / budget (training step) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["op"] in ("fit", "predict") and row["dtype"] == "float32":
            o, calls = row["ours"], model_calls[row["problem"]]
            forward, step = calls["first"], calls.get("train_first", float("nan"))
            ratios = [o["cold"] / (1.5 * o["median"] + base) for base in (forward, step)]
            lines.append(
                f"| {row['case']} | {o['cold']:.3f} s | {o['median']:.3f} s | {forward:.3f} s / {step:.3f} s | "
                f"{ratios[0]:.2f} | {ratios[1]:.2f} |"
            )
    return lines


if __name__ == "__main__":
    main()
