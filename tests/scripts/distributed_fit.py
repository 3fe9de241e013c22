"""Fits on one device and under a tf.distribute strategy, and checks that they agree.

Run by tests/test_distribute.py in fresh processes (device setup must precede TensorFlow's):
  python distributed_fit.py mirrored
  python distributed_fit.py multiworker   (with TF_CONFIG set; one process per worker)
Prints a JSON line of the largest differences and exits non-zero if any exceeds float tolerance.
"""

import json
import sys

import tensorflow as tf

MODE = sys.argv[1]
if MODE == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()  # must come before any other TensorFlow work

import keras  # noqa: E402
import numpy as np  # noqa: E402

import laplace_tf as lt  # noqa: E402

TOLERANCE = 1e-10


def model_and_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(6, activation="tanh", dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(37, 4)), rng.integers(0, 3, size=37)


def differences(structure, model, x, y, subset="all"):
    options = {"hessian_structure": structure, "subset_of_weights": subset, "prior_precision": 0.7, "rank": 8}
    one = lt.Laplace(model, "classification", **options)
    many = lt.Laplace(model, "classification", strategy=STRATEGY, **options)
    one.fit((x, y), batch_size=10, verbose=False)
    many.fit((x, y), batch_size=10, verbose=False)
    flat = [np.asarray(t) for t in tf.nest.flatten(one._curvature_state())]
    flat_many = [np.asarray(t) for t in tf.nest.flatten(many._curvature_state())]
    return {
        "curvature": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(flat, flat_many, strict=True)),
        "marglik": abs(float(one.log_marginal_likelihood()) - float(many.log_marginal_likelihood())),
        "glm": float(np.max(np.abs(one.predict(x, verbose=False) - many.predict(x, verbose=False)))),
        "nn": float(
            np.max(
                np.abs(
                    one.predict(x, pred_type="nn", seed=1, verbose=False)
                    - many.predict(x, pred_type="nn", seed=1, verbose=False)
                )
            )
        ),
    }


def gp_differences(model, x, y, **options):
    """The function-space Laplace (a subset of 15 points, shared unevenly by the replicas): predictions
    (eigenvectors are compared through them, their signs being arbitrary)."""
    one = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="gp", n_subset=15, **options)
    many = lt.Laplace(
        model,
        "classification",
        subset_of_weights="all",
        hessian_structure="gp",
        n_subset=15,
        strategy=STRATEGY,
        **options,
    )
    one.fit((x, y), batch_size=10, verbose=False)
    many.fit((x, y), batch_size=10, verbose=False)
    return {
        "glm": float(np.max(np.abs(one.predict(x, verbose=False) - many.predict(x, verbose=False)))),
        "nn": float(np.max(np.abs(one.predict(x, pred_type="nn", seed=1) - many.predict(x, pred_type="nn", seed=1)))),
    }


def marglik_training_difference(x, y):
    """Marglik training (full-batch SGD, float32) of a model built under the strategy and of one
    built without: the learned prior precisions and evidences, relative differences."""

    def train(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(3)]
            )
            callback = lt.MarglikCallback((x, y), "classification", verbose=False)
            model.compile(keras.optimizers.SGD(0.1), loss=callback.loss)
        model.fit(x, y, epochs=4, batch_size=len(y), shuffle=False, callbacks=[callback], verbose=0)
        return callback.laplace

    one, many = train(tf.distribute.get_strategy()), train(STRATEGY)
    prior = np.max(np.abs(many.prior_precision.numpy() / one.prior_precision.numpy() - 1))
    evidence = abs(float(many.log_marginal_likelihood()) / float(one.log_marginal_likelihood()) - 1)
    return {"prior": float(prior), "evidence": evidence, "strategy_used": many.strategy is STRATEGY}


def main():
    model, x, y = model_and_data()
    report = {"replicas": STRATEGY.num_replicas_in_sync}
    for structure in ("full", "diag", "kron"):
        report[structure] = differences(structure, model, x, y)
        report[f"last_layer_{structure}"] = differences(structure, model, x, y, "last_layer")  # from the features
    report["gp"] = gp_differences(model, x, y)
    report["gp_nystrom"] = gp_differences(model, x, y, n_eigenvalues=10)
    with STRATEGY.scope():  # the strategy of the active scope is used without strategy=
        scoped = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
            (x, y), batch_size=10, verbose=False
        )
    plain = lt.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full").fit(
        (x, y), batch_size=10, verbose=False
    )
    report["scope"] = float(np.max(np.abs(scoped.curvature - plain.curvature)))
    trained_alike = True
    if MODE == "mirrored":
        report["marglik_training"] = marglik_training_difference(x[:36], y[:36])
        differences_ = report["marglik_training"]
        trained_alike = differences_["strategy_used"] and max(differences_["prior"], differences_["evidence"]) < 1e-4
    print(json.dumps(report))
    structures = ("full", "diag", "kron", "last_layer_full", "last_layer_diag", "last_layer_kron", "gp", "gp_nystrom")
    worst = max([report["scope"], *(v for s in structures for v in report[s].values())])
    sys.exit(0 if worst < TOLERANCE and report["replicas"] == 2 and trained_alike else 1)


main()
