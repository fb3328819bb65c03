#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real local servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
