"""`python -m faregate.accounting.price_resolver`: deployments (JSON on stdin, as
`pricing.dep_spec` writes them) -> their prices (JSON on stdout, `pricing.price_to_json`).

The gateway runs this once per worker start, in the background, so genai-prices' import and
index (~0.3 s, ~5 MB kept) stay out of the long-lived worker; a worker imports genai-prices
itself only to cost a deployment with tiered prices."""

from __future__ import annotations

import json
import sys

from faregate.accounting.pricing import price_to_json, resolve


def main() -> int:
    specs = json.load(sys.stdin)
    json.dump({s["id"]: price_to_json(resolve(s), s) for s in specs}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
