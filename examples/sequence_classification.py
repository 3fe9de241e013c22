"""A Laplace approximation over a whole LSTM: its confidence on padded token sequences, and on
longer sequences than the network was trained on.

The data: 500 sequences of tokens 1-9, of 4 to 10 tokens, padded with 0 (masked by the
Embedding). The label is the group of the *first* token (1-3, 4-6, 7-9), with 15% of the labels
drawn at random instead, so the LSTM must carry the first token through the whole sequence. It
is trained the way many are, without weight decay, for 60 epochs. A Kronecker-factored
Laplace over every weight (Embedding, LSTM kernels, Dense) is fitted and its prior precision
tuned by the marginal likelihood. The LSTM's kernels get Kronecker blocks over the steps each
sequence ran (`laplace_tf.networks.curvature.recurrent_layers`).

The model declares its sequence axis free (``keras.Input((None,))``), so the same posterior
predicts on sequences of 20 to 40 tokens: a shift the network was not trained for, on which its
accuracy falls (to about 0.62 from 0.89) while the MAP network stays confident (mean confidence
0.92 on both). The script prints the NLL, ECE (10 bins) and accuracy of the MAP network and of the
Laplace predictive on both (from `la.evaluate`), and plots accuracy and mean confidence against
the sequence length. This Laplace is underconfident where the network is right: the scalar prior
the marginal likelihood picks (about 0.45; the network was trained without weight decay) leaves
the posterior broad, so its mean confidence is 0.73 on sequences like the training ones, below
their accuracy, which costs NLL there (0.43 to 0.49) and ECE (0.04 to 0.16). On the longer ones
its mean confidence, 0.71, is close to the accuracy: NLL 1.32 to 0.91, ECE 0.30 to 0.11. (Numbers
from an AMD EPYC with AVX-512; training round-off differs from CPU to CPU.)

Run:  python examples/sequence_classification.py           (about 15 seconds)
      python examples/sequence_classification.py --smoke   (a few seconds; what CI runs)
Writes outputs/sequence_classification.png.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import laplace_tf as lt

CLASSES, VOCABULARY, FLIPPED = 3, 10, 0.15


def sequences(
    n: int, lengths: tuple[int, int], rng: np.random.Generator, padded_to: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` token sequences of ``lengths[0]`` to ``lengths[1]`` tokens, zero-padded to the longest
    (or to ``padded_to``), labelled by their first token's group, a fraction ``FLIPPED`` at random."""
    width = padded_to or lengths[1]
    length = rng.integers(lengths[0], lengths[1] + 1, size=n)
    tokens = rng.integers(1, VOCABULARY, size=(n, width))
    tokens[np.arange(width) >= length[:, None]] = 0
    labels = (tokens[:, 0] - 1) // 3
    flipped = rng.random(n) < FLIPPED
    labels[flipped] = rng.integers(0, CLASSES, size=flipped.sum())
    return tokens.astype("int32"), labels


def trained_lstm(x: np.ndarray, y: np.ndarray, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(VOCABULARY, 8, mask_zero=True),
            keras.layers.LSTM(24),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny and fast, for CI")
    parser.add_argument("--out", type=Path, default=Path("outputs/sequence_classification.png"))
    args = parser.parse_args()
    smoke = args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1"
    rng = np.random.default_rng(0)
    n_train, epochs = (200, 3) if smoke else (500, 60)

    x, y = sequences(n_train, (4, 10), rng)
    model = trained_lstm(x, y, epochs)
    la = lt.Laplace(model, "classification", hessian_structure="kron", subset_of_weights="all").fit(
        (x, y), verbose=not smoke
    )
    la.optimize_prior_precision()
    print(f"prior precision tuned by the marginal likelihood: {float(la.prior_precision):.3g}")

    tests = {"4-10 tokens (as trained)": (4, 10), "20-40 tokens (shifted)": (20, 40)}
    print(f"\n{'':>26}{'':>10}{'NLL':>8}{'ECE':>8}{'accuracy':>10}")
    for name, lengths in tests.items():
        x_test, y_test = sequences(1000, lengths, rng)
        report = la.evaluate(x_test, y_test, n_bins=10)  # the MAP network and the Laplace predictive
        for method, metrics in report.metrics.items():
            print(f"{name:>26}{method:>10}{metrics['nll']:8.3f}{metrics['ece']:8.3f}{metrics['accuracy']:10.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_by_length(model, la, rng, args.out, per_length=100 if smoke else 400)
    print(f"plot saved to {args.out}")


def map_probabilities(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(x, verbose=0)))


def plot_by_length(model: keras.Model, la: lt.Laplace, rng: np.random.Generator, path: Path, per_length: int) -> None:
    """Accuracy and mean confidence of the MAP network and the Laplace predictive, by sequence length
    (every length padded to the longest: the padding is masked)."""
    from matplotlib.figure import Figure

    lengths = np.arange(4, 41, 4)
    curves: dict[str, list[float]] = {"accuracy": [], "MAP confidence": [], "Laplace confidence": []}
    for length in lengths:
        x, y = sequences(per_length, (length, length), rng, padded_to=lengths[-1])
        map_probs, laplace_probs = map_probabilities(model, x), np.asarray(la.predict(x))
        curves["accuracy"].append(lt.calibration.accuracy(laplace_probs, y))
        curves["MAP confidence"].append(lt.calibration.mean_confidence(map_probs))
        curves["Laplace confidence"].append(lt.calibration.mean_confidence(laplace_probs))
    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.subplots()
    axes.axvspan(4, 10, color="0.92", label="lengths trained on")
    axes.plot(lengths, curves["accuracy"], "k-o", label="accuracy (Laplace)")
    axes.plot(lengths, curves["MAP confidence"], "C3--s", label="mean confidence, MAP")
    axes.plot(lengths, curves["Laplace confidence"], "C0-^", label="mean confidence, Laplace")
    axes.axhline(1 / CLASSES, color="0.5", ls=":", lw=1, label="chance")
    axes.set(xlabel="sequence length (tokens)", ylabel="fraction", ylim=(0, 1.02), title="LSTM: confidence vs accuracy")
    axes.legend(loc="lower left", fontsize=8)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
