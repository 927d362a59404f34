#!/usr/bin/env bash
# The main job: a real end-to-end encrypted loopback call between two local users through a
# local signaling server; prints both SASes and what was heard. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/voice demo "$@"
