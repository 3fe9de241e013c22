"""Demo: calibrated uncertainty for a trained Keras classifier, after the fact.

Trains a 2-50-50-3 ReLU MLP on a 2-D, three-class toy problem, fits a Laplace approximation over
all its weights, tunes the prior on validation NLL, prints the uncertainty report (MAP vs
Laplace on test data and far from the data) and saves a plot (laplace_tf/cli/demo.py holds the
code; `laplace-tf demo` runs the same).

Run:  python examples/demo.py           (about a minute)
      python examples/demo.py --smoke   (a few seconds; what CI runs)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from laplace_tf.cli import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny and fast, for CI")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo.png"), help="where to save the plot")
    args = parser.parse_args()
    demo.run(args.out, smoke=args.smoke or os.environ.get("LAPLACE_TF_SMOKE") == "1")


if __name__ == "__main__":
    main()
