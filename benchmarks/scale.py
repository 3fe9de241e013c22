"""Scale: kron and last-layer Laplace on a network with over 2 million parameters.

Run: python benchmarks/scale.py STRUCTURE SUBSET  (each in its own process, for its own peak memory)
Prints JSON: parameters, fit and predict time, and the process's peak resident memory.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import resource
import sys
import time

import keras
import numpy as np

import laplace_tf as lt


def main(structure: str, subset: str) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4096, 784)).astype("float32"), rng.integers(0, 10, size=4096)
    la = lt.Laplace(model, "classification", subset_of_weights=subset, hessian_structure=structure)
    start = time.perf_counter()
    la.fit((x, y), batch_size=256, verbose=False)
    fit = time.perf_counter() - start
    la.optimize_prior_precision()
    start = time.perf_counter()
    probs = la.predict(x[:256]).numpy()
    predict = time.perf_counter() - start
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    print(
        json.dumps(
            {
                "structure": structure,
                "subset": subset,
                "model_params": model.count_params(),
                "laplace_params": la.n_params,
                "fit_s": fit,
                "predict_256_s": predict,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
