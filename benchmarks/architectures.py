"""Real architectures: an Embedding + LSTM classifier and a Transformer encoder block, per structure.

Run: python benchmarks/architectures.py            (all cases, each in its own process)
     python benchmarks/architectures.py MODEL STRUCTURE SUBSET   (one case; prints JSON)
Each case fits on 1,024 token sequences (length 16, vocabulary 200, 4 classes, batch 64, float32)
and reports the fit time (first call, tracing included, and a second fit), the GLM predictive on
256 sequences, and the process's peak resident memory. Prints a Markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import resource
import subprocess
import sys
import time

import keras
import numpy as np

import laplace_tf as lt

LENGTH, VOCABULARY, CLASSES, EXAMPLES = 16, 200, 4, 1024
CASES = [
    (model, structure, subset)
    for model in ("lstm", "transformer")
    for structure, subset in (("diag", "all"), ("kron", "all"), ("lowrank", "all"), ("full", "last_layer"))
]


def lstm() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, 32),
            keras.layers.LSTM(32),
            keras.layers.Dense(CLASSES),
        ]
    )


def transformer() -> keras.Model:
    tokens = keras.Input((LENGTH,), dtype="int32")
    embedded = keras.layers.Embedding(VOCABULARY, 32)(tokens)
    attended = keras.layers.MultiHeadAttention(4, 8)(embedded, embedded)
    hidden = keras.layers.LayerNormalization()(embedded + attended)
    feed_forward = keras.layers.Dense(32)(keras.layers.Dense(64, activation="relu")(hidden))
    hidden = keras.layers.LayerNormalization()(hidden + feed_forward)
    return keras.Model(tokens, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling1D()(hidden)))


def run_case(name: str, structure: str, subset: str) -> dict:
    keras.utils.set_random_seed(0)
    model = {"lstm": lstm, "transformer": transformer}[name]()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, VOCABULARY, (EXAMPLES, LENGTH)).astype("int32"), rng.integers(0, CLASSES, EXAMPLES)
    options = {"rank": 20} if structure == "lowrank" else {}
    la = lt.Laplace(model, "classification", hessian_structure=structure, subset_of_weights=subset, **options)
    fits = []
    for _ in range(2):
        start = time.perf_counter()
        la.fit((x, y), batch_size=64, verbose=False)
        fits.append(time.perf_counter() - start)
    start = time.perf_counter()
    probs = la.predict(x[:256], verbose=False).numpy()
    predict = time.perf_counter() - start
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    return {
        "model": name,
        "structure": structure,
        "subset": subset,
        "model_params": model.count_params(),
        "laplace_params": la.n_params,
        "first_fit_s": fits[0],
        "fit_s": fits[1],
        "predict_256_s": predict,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    rows = []
    for case in CASES:
        done = subprocess.run([sys.executable, __file__, *case], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    header = ["model", "structure", "weights", "posterior parameters", "first fit", "fit", "predict 256", "peak"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} ({r['model_params']:,} weights) | `{r['structure']}` | {r['subset']} | "
            f"{r['laplace_params']:,} | {r['first_fit_s']:.2f} s | {r['fit_s']:.2f} s | "
            f"{r['predict_256_s']:.2f} s | {r['peak_rss_mib'] / 1024:.2f} GiB |"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(json.dumps(run_case(*sys.argv[1:])))
    else:
        main()
