"""Request-log costs: the stage's work on the request path, the writer thread's per-row work
(metadata mode, and full mode with Presidio redaction) on typical chat bodies, and what loading
Presidio (regex-only) costs a process in time and memory.

    .venv/bin/python bench/request_log.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

from faregate.core.call import Call
from faregate.logs.entry import log_entry, log_row
from faregate.logs.redact import Redactor

SYSTEM = ("You are a helpful assistant for ACME Corp. Answer concisely, cite the knowledge base "
          "article when you use one, and never reveal internal notes. ") * 2
PROSE = ("Our quarterly report shows revenue grew 12% to 4.5 million in Q3 2024 while costs stayed "
         "flat. Summarise the three main drivers and suggest two follow-up analyses. ") * 4
PII = ("My account e-mail is jane.doe@example.org and my phone +1 415-555-0132; the card ending "
       "4111 1111 1111 1111 was charged twice, please refund to IBAN DE89370400440532013000. ")


def _call(user: str, answer: str) -> Call:
    body = {"model": "gpt-4o-mini", "max_tokens": 256, "temperature": 0.2,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}
    call = Call("req", "chat", body, {})
    call.response = {"id": "chatcmpl-abc", "object": "chat.completion", "created": 1730000000, "model": "gpt-4o-mini",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 250, "completion_tokens": 120, "total_tokens": 370}}
    return call


def _per_call(fn: Any, n: int) -> float:
    """Best of 5 rounds, µs per call (the machine may be shared: the best round is the cost)."""
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t) / n * 1e6)
    return min(rounds)


def main() -> None:
    redactor = Redactor(secrets=["sk-master-0123456789abcdef"])
    plain = Redactor(secrets=["sk-master-0123456789abcdef"], presidio=False)
    t = time.perf_counter()
    redactor.load()
    print(f"Presidio load in this process: {(time.perf_counter() - t) * 1000:.0f} ms")
    cases = {"typical (no PII)": _call(PROSE, PROSE[:600]), "typical + PII": _call(PROSE + PII, PII + PROSE[:400]),
             "long (x4)": _call(PROSE * 4, PROSE * 2)}
    for name, call in cases.items():
        chars = sum(len(m["content"]) for m in call.body["messages"]) + len(call.response["choices"][0]["message"]["content"])
        path = _per_call(lambda c=call: log_entry(c, bodies=True, sample_rate=1.0), 20000)
        meta = log_entry(call, bodies=False, sample_rate=1.0)
        full = log_entry(call, bodies=True, sample_rate=1.0)
        metadata_us = _per_call(lambda e=meta: log_row(e, plain, 20000), 5000)
        secrets_us = _per_call(lambda e=full: log_row(e, plain, 20000), 2000)
        presidio_us = _per_call(lambda e=full: log_row(e, redactor, 20000), 100)
        print(f"{name:18} {chars:5} chars of text | request path {path:5.1f} µs | writer thread: metadata "
              f"{metadata_us:5.1f} µs, bodies+secrets only {secrets_us:6.1f} µs, bodies+Presidio {presidio_us:7.0f} µs")
    code = ("import time,resource;from faregate.logs.redact import Redactor;r=Redactor();"
            "rss=lambda:int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])//1024;"
            "a=rss();t=time.perf_counter();r.load();r.redact('warm up bob@example.com 4111 1111 1111 1111');"
            "print(f'{(time.perf_counter()-t)*1000:.0f} {a} {rss()}')")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            for _ in range(3)]
    ms = statistics.median(int(r[0]) for r in runs)
    before, after = statistics.median(int(r[1]) for r in runs), statistics.median(int(r[2]) for r in runs)
    print(f"Presidio regex-only in a fresh process: import + build + first call {ms:.0f} ms, RSS {before} -> {after} MB "
          f"(+{after - before} MB)")


if __name__ == "__main__":
    main()
