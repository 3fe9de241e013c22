#!/usr/bin/env bash
# The ArviZ tests again with arviz >= 1 (xarray DataTree), which needs Python >= 3.12:
# a second virtual environment, .venv-arviz1, with a Python 3.12+ from the machine. A machine with
# no Python 3.12+ cannot install arviz 1: the script says so loudly and leaves the verdict to the
# main suite (which covers arviz 0.x), so the test command still works with any Python 3.
set -euo pipefail
cd "$(dirname "$0")/.."
python=""
pyenv_pythons=$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.1[2-3]*/bin/python3 2>/dev/null || true)
for candidate in python3 python3.13 python3.12 $pyenv_pythons; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "NOT RUN: the arviz >= 1 tests need Python >= 3.12 (python3.12 or python3.13 on PATH)." >&2
    exit 0
fi
"$python" -m venv .venv-arviz1
.venv-arviz1/bin/pip install -q -e ".[test]" "arviz>=1"
.venv-arviz1/bin/python -c 'import arviz; assert int(arviz.__version__.split(".")[0]) >= 1, arviz.__version__'
.venv-arviz1/bin/python -m pytest -q tests/test_arviz.py tests/test_reports.py tests/test_models.py
