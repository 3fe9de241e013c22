"""The ``laplace-tf`` command: fit, predict, report, sample and demo from a terminal.

Example:
    ```bash
    $ laplace-tf fit model.keras train.npz --likelihood classification --structure kron --out posterior.npz
    $ laplace-tf report posterior.npz model.keras test.npz --json report.json --plot report.png
    $ laplace-tf predict posterior.npz model.keras test.csv --target label --out predictions.csv
    $ laplace-tf sample posterior.npz model.keras --data train.npz --num-draws 400 --out draws.nc
    ```

Errors (missing files, wrong formats, mismatched shapes) print one line to stderr and exit with
status 1; wrong usage exits with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from laplace_tf.cli.data_files import InputError, check_inputs_fit_model, read_data, read_model
from laplace_tf.options import HessianStructure, KfacApprox, LinkApprox, PredType, PriorStructure
from laplace_tf.options import Likelihood as LikelihoodName

PRIOR_METHODS = ("marglik", "grid", "none")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        _check_output_paths(args)
        args.run(args)
    except (InputError, FileNotFoundError, ValueError, TypeError, MemoryError, OSError) as error:
        print(f"laplace-tf {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


OUTPUT_SUFFIXES = {
    ("fit", "out"): (".npz",),
    ("predict", "out"): (".npz", ".csv"),
    ("sample", "out"): (".nc",),
    ("demo", "out"): (".png",),
    ("report", "json"): (".json",),
    ("report", "plot"): (".png",),
}


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuses, before any work, an output path with the wrong suffix or in a folder that cannot be written."""
    for (command, option), suffixes in OUTPUT_SUFFIXES.items():
        path = getattr(args, option, None) if args.command == command else None
        if path is None:
            continue
        if path.suffix not in suffixes:
            raise InputError(f"--{option} {path}: must end in {' or '.join(suffixes)}.")
        if path.is_dir():
            raise InputError(f"--{option} {path}: is a folder; give a file name.")
        folder = path.parent
        if command == "demo":  # the demo creates its folder
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
        if not folder.is_dir():
            raise InputError(f"--{option} {path}: the folder {folder} does not exist.")
        if not os.access(folder, os.W_OK):
            raise InputError(f"--{option} {path}: the folder {folder} is not writable.")


def _fit(args: argparse.Namespace) -> None:
    """Fits a Laplace approximation to a trained model, tunes its prior, and saves the posterior."""
    import laplace_tf as lt

    if args.prior_method == "grid" and args.val_data is None:
        raise InputError("--prior-method grid needs validation data: --val-data FILE (.npz or .csv).")
    model = read_model(args.model)
    x, y = read_data(args.data, args.target)
    check_inputs_fit_model(x, model, args.data, pairs=args.likelihood == LikelihoodName.REWARD_MODELING.value)
    la = lt.Laplace(
        model,
        args.likelihood,
        subset_of_weights=_subset(args.subset),
        hessian_structure=args.structure,
        curvature=args.curvature,
        kfac_approx=args.kfac_approx,
    )
    la.fit((x, _targets(y, args.likelihood)), batch_size=args.batch_size, verbose=not args.quiet)
    if args.prior_method == "grid":
        x_val, y_val = read_data(args.val_data, args.target)
        la.optimize_prior_precision(
            method="gridsearch", val_data=(x_val, _targets(y_val, args.likelihood)), verbose=not args.quiet
        )
    elif args.prior_method == "marglik":
        la.optimize_prior_precision(prior_structure=args.prior_structure, verbose=not args.quiet)
    la.save(args.out)
    print(f"saved the posterior to {args.out} (log marginal likelihood {float(la.log_marginal_likelihood()):.4g})")


def _predict(args: argparse.Namespace) -> None:
    """Writes predictions of a saved posterior: probabilities, or means and variances (regression,
    a reward model's items)."""
    la = _load(args)
    x, _ = read_data(args.data, args.target, need_targets=False)
    check_inputs_fit_model(x, la.model, args.data, pairs=_is_reward_model(la))
    options = {"pred_type": args.pred_type, "n_samples": args.samples, "seed": args.seed}
    if la.likelihood.name == LikelihoodName.REGRESSION:
        f_mean, f_var = la.predict(x, **options)
        columns = {"mean": f_mean.numpy(), "variance": f_var.numpy() + float(la.sigma_noise) ** 2}
    elif la.likelihood.name == LikelihoodName.HETEROSCEDASTIC:
        mean, epistemic, aleatoric = (t.numpy() for t in la.predict(x, **options))
        columns = {"mean": mean, "variance": epistemic + aleatoric, "epistemic": epistemic, "aleatoric": aleatoric}
    else:
        prediction = la.predict(x, link_approx=args.link_approx, **options)
        if isinstance(prediction, tuple):  # a reward model's items: the latent reward
            columns = {"mean": prediction[0].numpy(), "variance": prediction[1].numpy()}
        else:
            columns = {"probs": prediction.numpy()}
    _write_predictions(args.out, columns)
    print(f"wrote predictions for {len(next(iter(columns.values())))} inputs to {args.out}")


def _report(args: argparse.Namespace) -> None:
    """Prints the uncertainty report (MAP vs Laplace) on test data; writes it as JSON and a plot."""
    la = _load(args)
    x, y = read_data(args.data, args.target)
    check_inputs_fit_model(x, la.model, args.data, pairs=_is_reward_model(la))
    x_ood = None if args.ood is None else read_data(args.ood, args.target, need_targets=False)[0]
    report = la.evaluate(
        x, _targets(y, la.likelihood.name.value), x_ood, pred_type=args.pred_type, link_approx=args.link_approx
    )
    print(report)
    if args.json:
        report.to_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}")


def _sample(args: argparse.Namespace) -> None:
    """Writes posterior draws (and, with data, predictive draws and log-likelihoods) as ArviZ NetCDF."""
    from laplace_tf.files import replace_atomically

    la = _load(args)
    x = y = None
    if args.data is not None:
        x, y = read_data(args.data, args.target)
        y = _targets(y, la.likelihood.name.value)
    data = la.to_inference_data(x, y, num_draws=args.num_draws, num_chains=args.chains, seed=args.seed)
    replace_atomically(args.out, data.to_netcdf)
    print(f"wrote {args.num_draws} posterior draws as ArviZ NetCDF to {args.out}")


def _demo(args: argparse.Namespace) -> None:
    """Trains a toy classifier, fits a Laplace approximation, prints and plots its report."""
    from laplace_tf.cli import demo

    demo.run(args.out, smoke=args.smoke)


def _load(args: argparse.Namespace) -> Any:
    import laplace_tf as lt

    return lt.load(args.posterior, read_model(args.model))


def _is_reward_model(la: Any) -> bool:
    return la.likelihood.name == LikelihoodName.REWARD_MODELING


def _subset(subset: str) -> str | list[str]:
    """'all', 'last_layer', or comma-separated variable-path patterns."""
    return subset if subset in ("all", "last_layer") else [p.strip() for p in subset.split(",") if p.strip()]


def _targets(y: np.ndarray, likelihood: str) -> np.ndarray:
    """Labels read as floats (from CSV) become integers for classifiers, if they are whole numbers."""
    if likelihood in ("regression", "heteroscedastic") or np.issubdtype(y.dtype, np.integer):
        return y
    if np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def _write_predictions(path: Path, columns: dict[str, np.ndarray]) -> None:
    from laplace_tf.files import write_atomically

    if path.suffix == ".npz":
        write_atomically(path, lambda file: np.savez(file, **columns))
        return
    if path.suffix != ".csv":
        raise InputError(f"{path}: predictions are written as .npz or .csv, not {path.suffix!r}.")
    names = [f"{name}_{k}" for name, values in columns.items() for k in range(values.shape[1])]
    table = np.concatenate(list(columns.values()), axis=1)
    lines = [",".join(names)] + [",".join(f"{v:.10g}" for v in row) for row in table]
    write_atomically(path, lambda file: file.write(("\n".join(lines) + "\n").encode()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="laplace-tf", description="Laplace approximations for Keras models.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = commands.add_parser("fit", help="fit a Laplace approximation and save it", description=_fit.__doc__)
    fit.add_argument("model", type=Path, help="the trained model, a .keras file")
    fit.add_argument("data", type=Path, help="training data: .npz (arrays x, y) or .csv (header row; --target)")
    fit.add_argument("--target", help="the target column of .csv data")
    fit.add_argument("--likelihood", required=True, choices=[v.value for v in LikelihoodName])
    fit.add_argument("--structure", default="kron", choices=[v.value for v in HessianStructure])
    fit.add_argument(
        "--subset", default="last_layer", help="'all', 'last_layer' (default) or comma-separated variable-path patterns"
    )
    fit.add_argument("--curvature", default="ggn", choices=["ggn", "ef", "hessian"])
    fit.add_argument(
        "--kfac-approx",
        default="expand",
        choices=[v.value for v in KfacApprox],
        help="kron's convention for weights an example's positions share (reduce: pooled outputs)",
    )
    fit.add_argument("--prior-method", default="marglik", choices=PRIOR_METHODS, help="tune the prior precision")
    fit.add_argument("--val-data", type=Path, help="validation data for --prior-method grid")
    fit.add_argument("--prior-structure", default="layerwise", choices=[v.value for v in PriorStructure])
    fit.add_argument("--batch-size", type=int, default=None)
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    fit.add_argument("--out", type=Path, required=True, help="where to save the posterior (.npz)")
    fit.set_defaults(run=_fit)

    predict = commands.add_parser("predict", help="predict with a saved posterior", description=_predict.__doc__)
    _posterior_arguments(predict)
    predict.add_argument("data", type=Path, help="inputs: .npz (array x) or .csv")
    predict.add_argument("--out", type=Path, required=True, help="predictions: .npz or .csv")
    predict.add_argument("--samples", type=int, default=100, help="draws for pred-type nn and link mc")
    predict.set_defaults(run=_predict)

    report = commands.add_parser(
        "report", help="print the uncertainty report, write JSON and a plot", description=_report.__doc__
    )
    _posterior_arguments(report)
    report.add_argument("data", type=Path, help="test data: .npz (arrays x, y) or .csv (--target)")
    report.add_argument("--ood", type=Path, help="out-of-distribution inputs (.npz or .csv)")
    report.add_argument("--json", type=Path, help="write the report as JSON")
    report.add_argument("--plot", type=Path, help="write the reliability or coverage plot (.png)")
    report.set_defaults(run=_report)

    sample = commands.add_parser(
        "sample", help="posterior and predictive draws as ArviZ NetCDF", description=_sample.__doc__
    )
    _posterior_arguments(sample)
    sample.add_argument("--data", type=Path, help="data for the predictive groups, log-likelihood and log_p")
    sample.add_argument("--num-draws", type=int, default=1000)
    sample.add_argument("--chains", type=int, default=4)
    sample.add_argument("--out", type=Path, required=True, help="the NetCDF file (.nc)")
    sample.set_defaults(run=_sample)

    demo = commands.add_parser(
        "demo", help="train a toy classifier, fit a Laplace, print and plot its report", description=_demo.__doc__
    )
    demo.add_argument("--out", type=Path, default=Path("outputs/demo.png"))
    demo.add_argument("--smoke", action="store_true", help="tiny and fast")
    demo.set_defaults(run=_demo)
    return parser


def _posterior_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("posterior", type=Path, help="a posterior saved by 'laplace-tf fit' (.npz)")
    parser.add_argument("model", type=Path, help="the model it was fitted to (.keras)")
    parser.add_argument("--target", help="the target column of .csv data")
    parser.add_argument("--pred-type", default="glm", choices=[v.value for v in PredType])
    parser.add_argument("--link-approx", default="probit", choices=[v.value for v in LinkApprox])
    parser.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    sys.exit(main())
