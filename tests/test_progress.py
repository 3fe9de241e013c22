"""Progress output: a live bar in a terminal; in a log, no escape sequences and one line per task;
predictions quiet while short; nothing at all with verbose=False."""

import itertools

import numpy as np
from conftest import make_mlp

import laplace_tf as lt
from laplace_tf import progress


def test_logs_get_one_plain_line_per_task_and_silence_is_silent(capsys, monkeypatch, classification_data):
    x, y = classification_data
    x, y = np.repeat(x, 20, axis=0), np.repeat(y, 20)  # 460 examples: many batches
    la = lt.Laplace(make_mlp(4, 3), "classification", hessian_structure="diag", subset_of_weights="all")
    la.fit((x, y), batch_size=16)
    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)  # a prediction as long as one that shows its line
    la.predict(np.repeat(x[:1], 2100, axis=0), pred_type="nn", n_samples=2, seed=0)  # 9 batches of 256
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith(("fit:", "predict:"))] == ["fit", "predict"]
    assert lines[0].startswith("fit: 29 batches in ") and lines[1].startswith("Laplace fitted: 460 examples")
    la.fit((x, y), batch_size=16, verbose=False)
    la.predict(x, verbose=False)
    la.optimize_prior_precision(verbose=False)
    assert capsys.readouterr().out == ""


def test_a_terminal_gets_the_live_bar(capsys, monkeypatch, classification_data):
    x, y = classification_data
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    lt.Laplace(make_mlp(4, 3), "classification", hessian_structure="diag", subset_of_weights="all").fit(
        (x, y), batch_size=4
    )
    out = capsys.readouterr().out
    assert "6/6" in out and "fit: 6 batches in" not in out


def test_a_prediction_shorter_than_the_delay_stays_quiet_and_a_longer_one_shows_its_bar(capsys, monkeypatch):
    """Predictions show progress only once they have run QUIET_SECONDS: a loop that ends sooner
    prints nothing, in a log or a terminal; in a terminal the bar appears when the delay has
    passed and counts the steps done before it."""
    clock = itertools.count()  # each reading of the clock one second later
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    monkeypatch.setattr(progress, "QUIET_SECONDS", 1e9)
    for _ in progress.batch_slices(10, 2, verbose=True, label="predict"):
        pass
    assert capsys.readouterr().out == ""
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr(progress, "QUIET_SECONDS", 2.5)  # passed at the third step
    bar_shown_at = []
    for index, _ in enumerate(progress.batch_slices(10, 2, verbose=True, label="predict")):
        if "/5" in capsys.readouterr().out:
            bar_shown_at.append(index)
    out = capsys.readouterr().out
    assert bar_shown_at[0] == 3 and "3/5" not in out and "5/5" in out and "predict:" not in out
