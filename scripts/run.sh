#!/usr/bin/env bash
# Set up (if needed) and run faregate on the embedded default: the bundled local model, no keys.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/faregate serve "$@"
