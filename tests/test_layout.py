"""The package's import direction (DESIGN.md): reports and cli use networks and models; networks and
models load nothing from reports or cli; nothing laplace.py imports imports it back."""

import ast
import pathlib
import subprocess
import sys

import laplace_tf

LAPLACE = "laplace_tf.networks.laplace"
ABOVE_LAPLACE = {
    "laplace_tf",
    "laplace_tf.networks.loading",
    "laplace_tf.networks.training",
    "laplace_tf.networks.subnetworks",
}

CHECK = f"""
import importlib, sys
importlib.import_module({LAPLACE!r})
print("above:", sorted(m for m in {sorted(ABOVE_LAPLACE - {"laplace_tf"})!r} if m in sys.modules))
for name in ("laplace_tf.networks.loading", "laplace_tf.networks.training", "laplace_tf.networks.subnetworks",
             "laplace_tf.models.approximation"):
    importlib.import_module(name)
print("reports:", sorted(m for m in sys.modules if m.startswith(("laplace_tf.reports", "laplace_tf.cli"))))
"""


def _modules_importing_laplace() -> set[str]:
    """Every module with an import of laplace.py anywhere in it (in functions and TYPE_CHECKING too)."""
    root = pathlib.Path(laplace_tf.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if LAPLACE in targets:
                found.add(name)
    return found


def test_only_modules_above_laplace_import_it():
    assert _modules_importing_laplace() == ABOVE_LAPLACE


def test_laplace_loads_nothing_above_it_and_networks_and_models_load_no_reports():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["above: []", "reports: []"]
