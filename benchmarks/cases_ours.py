"""laplace-tf's side of the benchmark: python cases_ours.py 'SPEC-JSON' -> JSON on the last line.

SPEC: ``op`` (fit, predict, tune, pipeline, hessian, model_predict, model_train_step),
``problem`` (a problem file's name), ``path``, ``structure``, ``prior`` (scalar or layerwise),
``noise`` (tune sigma_noise too), ``subset`` (``subset_of_weights``: all, or last_layer), ``dtype``,
``repeats`` (0: the first call only, as in a cold run).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import resource
import sys

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability  # noqa: F401  (imports before the clock: laplace-tf imports it lazily)
from architectures_keras import build as build_architecture
from timing import timed

import laplace_tf as lt
import laplace_tf.networks.laplace

BATCH, N_PREDICT = 128, 540


def build_mlp(problem, dtype):
    n_layers = len([k for k in problem.files if k.startswith("kernel_")])
    layers = [keras.Input((64,), dtype=dtype)]
    for i in range(n_layers):
        activation = "tanh" if i < n_layers - 1 else None
        layers.append(keras.layers.Dense(problem[f"kernel_{i}"].shape[1], activation=activation, dtype=dtype))
    model = keras.Sequential(layers)
    for i, layer in enumerate(model.layers):
        layer.set_weights([problem[f"kernel_{i}"], problem[f"bias_{i}"]])
    return model


def build(spec, problem):
    name = spec["problem"].removeprefix("problem_")
    if "kernel_0" in problem.files:
        return build_mlp(problem, spec["dtype"])
    state = {k.removeprefix("torch."): problem[k] for k in problem.files if k.startswith("torch.")}
    return build_architecture(name, state, spec["dtype"])


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


def predictive(la, x):
    """Classification probabilities, or the mean and variance side by side (regression, a reward
    model's items), as lists."""
    prediction = la.predict(x)
    if isinstance(prediction, tuple):
        return np.concatenate([prediction[0].numpy(), prediction[1].numpy()], axis=1).tolist()
    return prediction.numpy().tolist()


def per_pair_normalised(la, x_test):
    """The reward model's kron check against laplace-torch: the input factors A divided by the
    number of pairs rather than of items (laplace-torch's convention; ours is per item, see
    docs/likelihoods.md), everything else unchanged."""
    sums = dict(la._sums)
    sums["positions"] = [positions / 2 for positions in sums["positions"]]
    twin = lt.Laplace(la.model, "reward_modeling", subset_of_weights="all", hessian_structure="kron")
    twin._restore_fit(
        mean=la.mean,
        sums=sums,
        loss=la._loss,
        n_data=la.n_data,
        n_outputs=la.n_outputs,
        input_signature=la._input_signature,
    )
    return {
        "log_marglik_1": float(twin.log_marginal_likelihood(1.0)),
        "log_marglik_5": float(twin.log_marginal_likelihood(5.0)),
        "predictive": predictive(twin, x_test[:50]),
    }


def model_first_call(model, op, x, y, reward):
    """The model's own first predict on one batch, or first training step (on pairs, for a reward model)."""
    if op == "model_predict":
        items = x[:BATCH, 0] if reward else x[:BATCH]
        return timed(lambda: model.predict(items, verbose=0), 0)[0]
    if reward:  # the reward model scoring both items of a pair: two logits
        pairs = keras.Input(x.shape[1:], dtype=model.inputs[0].dtype)
        model = keras.Model(pairs, keras.layers.Flatten()(keras.layers.TimeDistributed(model)(pairs)))
    loss = "mse" if y.dtype.kind == "f" else keras.losses.SparseCategoricalCrossentropy(True)
    model.compile(optimizer="sgd", loss=loss)
    return timed(lambda: model.train_on_batch(x[:BATCH], y[:BATCH]), 0)[0]


def main(spec):
    tf.config.threading.set_intra_op_parallelism_threads(2)
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    if spec["op"] == "hessian":
        return {"hessian": hessian_case(getattr(tf, spec["dtype"]), spec["repeats"]), "peak_rss_mb": peak()}
    problem = np.load(spec["path"])
    model = build(spec, problem)
    x, y = problem["x_train"], problem["y_train"]
    reward = spec["problem"] == "problem_reward"
    if spec["op"] in ("model_predict", "model_train_step"):
        return {"first": model_first_call(model, spec["op"], x, y, reward), "peak_rss_mb": peak()}
    x = x if x.dtype.kind == "i" else x.astype(spec["dtype"])
    y = y.astype(spec["dtype"]) if y.dtype.kind == "f" else y
    x_test = problem["x_test"][:N_PREDICT]
    x_test = x_test if x_test.dtype.kind == "i" else x_test.astype(spec["dtype"])
    likelihood = "reward_modeling" if reward else "regression" if y.dtype.kind == "f" else "classification"

    def fit():
        la = lt.Laplace(
            model, likelihood, subset_of_weights=spec.get("subset", "all"), hessian_structure=spec["structure"]
        )
        return la.fit((x, y), batch_size=BATCH, verbose=False)

    def reset(la):
        la.prior_precision = 1.0
        if likelihood == "regression":
            la.sigma_noise = 1.0

    def tune(la):
        reset(la)
        la.optimize_prior_precision(
            method="marglik", prior_structure=spec.get("prior", "scalar"), optimize_sigma_noise=spec.get("noise", False)
        )
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
        out["tuned_log_marglik"] = float(la.log_marginal_likelihood())
        out["tuned_prior"] = np.atleast_1d(la.prior_precision.numpy()).tolist()
        out["tuned_sigma"] = float(la.sigma_noise)
    reset(la)
    out["log_marglik_1"] = float(la.log_marginal_likelihood(1.0))
    out["log_marglik_5"] = float(la.log_marginal_likelihood(5.0))
    out["predictive"] = predictive(la, x_test[:50])
    if reward and spec["structure"] == "kron":
        out["per_pair"] = per_pair_normalised(la, x_test)
    out["peak_rss_mb"] = peak()
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
