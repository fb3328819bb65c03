"""Local token counting: load time per encoding and µs per TokenCounter.prompt() call.

    .venv/bin/python bench/tokens.py

Each load is timed in a fresh TokenCounter (a fresh process would add the imports); prompt()
is timed on a typical ~500-token chat request and a ~20k-token one, best of 5 runs of a loop,
next to the bare tiktoken encode of the same text (what the message walk costs on top).
"""

from __future__ import annotations

import time

from faregate.accounting.tokens import TokenCounter

PROSE = (
    "The gateway authenticates each request, picks a deployment, and forwards the call upstream. "
    "When the upstream reports no usage, the ledger records a local estimate instead, marked as "
    "such. Rate limits in tokens per minute need an estimate before the call is made, so the "
    "prompt is counted at admission, and the largest output the request allows is reserved. "
    "Streaming responses are counted from the text that reached the client. "
)
CODE = 'def handler(request):\n    body = await request.json()\n    return {"ok": True, "n": len(body)}\n'


def chat_body(target_tokens: int, counter: TokenCounter, model: str) -> dict:
    """A system prompt, alternating user/assistant turns of prose and code, a tool definition."""
    messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
    body = {"model": model, "messages": messages, "max_tokens": 512, "tools": [{
        "type": "function", "function": {
            "name": "search_docs", "description": "Search the documentation.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                           "required": ["query"]}}}]}
    i = 0
    while counter.prompt("chat", body) < target_tokens:
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"Turn {i}. " + (PROSE if i % 3 else PROSE + CODE)})
        i += 1
    return body


def per_call_us(fn, loops: int) -> float:
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, time.perf_counter() - t)
    return best / loops * 1e6


def main() -> None:
    for models in (("gpt-4o",), ("gpt-4",), ("gpt-4o", "gpt-4")):
        c = TokenCounter()
        t, cpu = time.perf_counter(), time.process_time()
        c.load(*models)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        names = " + ".join(sorted(c._encodings))
        print(f"load {names:<26} {wall * 1e3:7.1f} ms  (CPU {cpu * 1e3:.0f} ms)")
    again = per_call_us(lambda: c.load("gpt-4o", "gpt-4"), 10_000)
    print(f"load again (already built)  {again:7.1f} µs")
    hello = per_call_us(lambda: c.text("hello world", "openai/gpt-4o"), 10_000)
    print(f"text('hello world')         {hello:7.1f} µs")

    print(f"\n{'request':<34}{'tokens':>7}{'prompt() µs':>13}{'bare encode µs':>16}")
    for model in ("gpt-4o", "gpt-4"):
        enc = c.encoding_for(model)
        for label, target, loops in (("small chat", 500, 2000), ("large chat", 20_000, 50)):
            body = chat_body(target, c, model)
            text = "".join(m["content"] for m in body["messages"])
            n = c.prompt("chat", body)
            us = per_call_us(lambda b=body, m=model: c.prompt("chat", b, m), loops)
            bare = per_call_us(lambda t=text, e=enc: e.encode_ordinary(t), loops)
            name = f"{label} {model} ({len(body['messages'])} msgs)"
            print(f"{name:<34}{n:>7}{us:>13.1f}{bare:>16.1f}")
        ids = list(range(20_000))
        us = per_call_us(lambda i=ids, m=model: c.prompt("completions", {"prompt": i}, m), 2000)
        print(f"{'completions, 20k token ids ' + model:<34}{20_000:>7}{us:>13.1f}")


if __name__ == "__main__":
    main()
