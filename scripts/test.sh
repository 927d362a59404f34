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
# Two workers (PYTEST_WORKERS); tests sharing a machine-wide resource take turns, and the ones
# that need the machine to themselves run afterwards, alone (tests/conftest.py). Both parts
# always run; the exit status is the first failure's (5, "no test selected", counts as none).
status=0
pytest -n "${PYTEST_WORKERS:-2}" -m "not alone" "$@" || status=$?
[ "$status" -eq 5 ] && status=0
echo "== pytest: the tests that run alone"
alone=0
pytest -p no:xdist -m alone "$@" || alone=$?
[ "$alone" -eq 5 ] && alone=0
[ "$status" -ne 0 ] || status=$alone
exit "$status"
