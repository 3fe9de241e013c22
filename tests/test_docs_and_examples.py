"""The examples run (in smoke mode) and the API reference covers every public name."""

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


def test_site_reference_covers_every_public_name():
    import laplace_tf as lt

    reference = (ROOT / "docs" / "reference.md").read_text()
    modules = {"calibration": "::: laplace_tf.reports.calibration."}
    missing = [name for name in lt.__all__ if modules.get(name, f"::: laplace_tf.{name}\n") not in reference]
    assert not missing, f"add to docs/reference.md: {missing}"


def test_public_names_survive_importing_every_submodule():
    """Lazy exports: a submodule import must not shadow a public function of the same name."""
    import importlib
    import pkgutil

    import laplace_tf as lt

    for module in pkgutil.walk_packages(lt.__path__, "laplace_tf."):
        if module.name not in ("laplace_tf.__main__",):
            importlib.import_module(module.name)
    assert callable(lt.hessian) and lt.hessian.__module__ == "laplace_tf.hessians"
    assert all(getattr(lt, name) is not None for name in lt.__all__)


def test_docstrings_have_no_control_characters():
    """A backslash in a non-raw docstring (``\\theta``) silently becomes a tab or backspace."""
    import ast

    bad = []
    for path in (ROOT / "laplace_tf").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node, clean=False) or ""
                if any(c in doc for c in "\t\x08\x0c\x07\x0b\r"):
                    bad.append(f"{path.name}:{getattr(node, 'name', 'module')}")
    assert not bad, bad


def test_online_laplace_forgets_less_than_plain_training():
    """The continual-learning example's claim, at its smoke size: averaged over the three tasks,
    the online Laplace keeps more of the earlier tasks than plain sequential training."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import continual_learning
    finally:
        sys.path.pop(0)
    history = continual_learning.run(epochs=20, n=100)
    plain, laplace = (sum(history[name][-1]) / 3 for name in ("plain", "online Laplace"))
    assert laplace > plain + 0.1
    assert min(history["online Laplace"][-1]) > 0.75  # no task forgotten
