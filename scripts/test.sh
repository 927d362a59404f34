#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy), then pytest (unit, integration with real
# servers and aiortc peers on loopback, adversarial). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/pulse.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== pytest ($(python -c 'from voice.media.opus import library_version as v; print(v())'))"
# Two workers (PYTEST_WORKERS); tests sharing a machine-wide resource take turns (tests/conftest.py)
pytest -n "${PYTEST_WORKERS:-2}" "$@"
