"""The package's import direction (DESIGN.md): reports and cli use networks and models; networks and
models load nothing from reports or cli; nothing laplace.py imports imports it back."""

import subprocess
import sys

CHECK = """
import importlib, sys
loaded = lambda prefix: sorted(m for m in sys.modules if m.startswith(prefix))
for name in ("laplace_tf.networks.io", "laplace_tf.networks.tuning"):
    importlib.import_module(name)
print("back:", loaded("laplace_tf.networks.laplace"))
for name in ("laplace_tf.networks.laplace", "laplace_tf.networks.loading", "laplace_tf.networks.training",
             "laplace_tf.networks.subnetworks", "laplace_tf.models.approximation"):
    importlib.import_module(name)
print("reports:", loaded("laplace_tf.reports") + loaded("laplace_tf.cli"))
"""


def test_networks_and_models_load_no_reports_and_nothing_imports_laplace_back():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["back: []", "reports: []"]
