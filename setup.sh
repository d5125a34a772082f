#!/usr/bin/env bash
# Create .venv with stainshift and its dev tools (pytest, ruff). Needs Python 3.11+ and pip.
# torch/torchvision resolve to the CPU wheels on this machine's disk (see the bounds in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m venv .venv
# pip's log goes to .venv/pip.log (the local package index prints hundreds of harmless warnings)
if ! .venv/bin/pip install --disable-pip-version-check -e '.[dev]' > .venv/pip.log 2>&1; then
    grep -v "^WARNING: Location" .venv/pip.log | tail -20
    echo "setup.sh: pip install failed (full log: .venv/pip.log)"
    exit 1
fi
.venv/bin/python -c "import stainshift, torch; print('stainshift ready: torch', torch.__version__)"
