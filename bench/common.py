"""What every part of the overhead benchmark shares: paths, the model and key it uses, its log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PY = sys.executable
MASTER_KEY = "sk-bench-master"
MODEL = "bench-model"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
