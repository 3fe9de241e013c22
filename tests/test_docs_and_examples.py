"""The examples run (in smoke mode) and the API reference matches the docstrings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_in_smoke_mode(script, tmp_path):
    env = {**os.environ, "LAPLACE_TF_SMOKE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "plot.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Laplace" in done.stdout
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_api_reference_is_current():
    sys.path.insert(0, str(ROOT / "docs"))
    import make_api

    assert (ROOT / "docs" / "api.md").read_text() == make_api.render(), "run: python docs/make_api.py"
