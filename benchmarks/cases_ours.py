"""laplace-tf's side of the benchmark: python cases_ours.py CASE DTYPE PROBLEM REPEATS -> JSON."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import resource
import sys

import keras
import numpy as np
import tensorflow as tf
from timing import timed

import laplace_tf as lt

BATCH, N_PREDICT = 128, 540


def build(problem, dtype):
    n_layers = len([k for k in problem.files if k.startswith("kernel_")])
    layers = [keras.Input((64,), dtype=dtype)]
    for i in range(n_layers):
        activation = "tanh" if i < n_layers - 1 else None
        layers.append(keras.layers.Dense(problem[f"kernel_{i}"].shape[1], activation=activation, dtype=dtype))
    model = keras.Sequential(layers)
    for i, layer in enumerate(model.layers):
        layer.set_weights([problem[f"kernel_{i}"], problem[f"bias_{i}"]])
    return model


def hessian_case(dtype, repeats):
    """lt.hessian against the autodiff guide's eager recipe and tf.hessians in a tf.function."""
    rng = np.random.default_rng(0)
    w = tf.Variable(rng.normal(size=(40, 10)), dtype=dtype)
    x = tf.constant(rng.normal(size=(64, 40)), dtype=dtype)
    labels = tf.constant(rng.integers(0, 10, size=64))

    def loss(w):
        logits = tf.matmul(x, w)
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    def eager_recipe():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = loss(w)
            gradient = inner.gradient(value, w)
        return tf.reshape(outer.jacobian(gradient, w), [400, 400])

    @tf.function
    def graph_hessians():
        value = tf.convert_to_tensor(w)  # tf.hessians differentiates tensors, not variables
        return tf.reshape(tf.hessians(loss(value), value)[0], [400, 400])

    results = {}
    for name, fn in [
        ("lt.hessian", lambda: lt.hessian(loss, w)),
        ("eager recipe", eager_recipe),
        ("tf.hessians in tf.function", graph_hessians),
    ]:
        first, median, value = timed(fn, repeats)
        results[name] = {"first": first, "median": median, "value": value.numpy()}
    reference = results["tf.hessians in tf.function"]["value"]
    for item in results.values():
        item["max_abs_diff"] = float(np.max(np.abs(item.pop("value") - reference)))
    return results


def main(case, dtype_name, path, repeats):
    tf.config.threading.set_intra_op_parallelism_threads(2)
    if case == "hessian":
        print(
            json.dumps(
                {
                    "hessian": hessian_case(getattr(tf, dtype_name), repeats),
                    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
        )
        return
    problem = np.load(path)
    model = build(problem, dtype_name)
    x, y = problem["x_train"].astype(dtype_name), problem["y_train"]
    x_test = problem["x_test"][:N_PREDICT].astype(dtype_name)
    structure = {
        "fit_full": "full",
        "fit_diag": "diag",
        "fit_kron": "kron",
        "predict_glm": "full",
        "tune_prior": "full",
    }[case]

    def fit():
        return lt.Laplace(model, "classification", hessian_structure=structure).fit(
            (x, y), batch_size=BATCH, verbose=False
        )

    out = {}
    if case.startswith("fit"):
        first, median, la = timed(fit, repeats)
    else:
        la = fit()
    if case == "predict_glm":
        first, median, _ = timed(lambda: la.predict(x_test).numpy(), repeats)
    if case == "tune_prior":

        def tune():
            la.prior_precision = 1.0
            return float(la.optimize_prior_precision(method="marglik"))

        first, median, _ = timed(tune, repeats)
        out["tuned_prior"] = float(la.prior_precision)
        out["tuned_log_marglik"] = float(la.log_marginal_likelihood())
        la.prior_precision = 1.0
    out["log_marglik_1"] = float(la.log_marginal_likelihood(1.0))
    out["log_marglik_5"] = float(la.log_marginal_likelihood(5.0))
    out["probs"] = la.predict(x_test[:50]).numpy().tolist()
    out.update(first=first, median=median, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
