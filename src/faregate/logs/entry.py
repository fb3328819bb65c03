"""A request-log entry: taken on the request path, turned into a table row in the writer thread.

On the request path (`log_entry`) nothing is copied, serialized or scanned: the entry holds
references to the call's body, response or stream text, decided there and then whether the
bodies are kept (mode, sample rate, failure). In the writer's thread (`log_row`) the bodies
are measured, cut to `max_body_chars`, redacted and serialized — Presidio's time is spent
there, in batches, never on the event loop.

Bodies stay valid JSON: the cut applies to the text inside them (every string, in document
order, until the budget is spent; then lists end with a `"<N more items>"` marker), and long
arrays of numbers (embedding vectors, token ids) become `"<N numbers>"`. Redaction runs on the
strings (dict keys too) joined into one text, so Presidio is called once per entry.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Iterable
from typing import Any

import orjson

from faregate.accounting.ledger import _attribution
from faregate.core.call import Call
from faregate.logs.redact import Redactor, Span, apply
from faregate.stages.authenticate import presented_key

_SEP = "\n\x1e\n"  # between joined strings: no recognizer matches across it
_MARGIN = 256  # characters past a cut that are still scanned: a secret cut in two is still found
_NUMBERS = 16  # longer arrays of plain numbers are summarised
# Dict keys like these ("model", "content", "finish_reason") can hold no finding (every one needs
# a digit, an "@" or a "-"): kept as they are, not scanned.
_NAME = re.compile(r"[A-Za-z_]{1,64}")


def log_entry(call: Call, *, bodies: bool, sample_rate: float) -> dict[str, Any]:
    """The entry, on the request path: plain values and references, no copies."""
    principal = call.principal
    err = call.error
    feature, _ = _attribution(call.headers)
    keep = bodies and (err is not None or sample_rate >= 1.0 or random.random() < sample_rate)
    return {
        "request_id": call.request_id,
        "created_at": call.received_at,  # epoch seconds; a datetime by the writer
        "key_id": principal.id if principal else None,
        "user_id": principal.user_id if principal else None,
        "feature": feature,
        "model": call.model,
        "status": call.status,
        "trace_id": trace_id(call),
        "_body": call.body,
        "_response": call.response,
        "_stream": call.stream_text if call.stream is not None else None,
        "_streaming": call.stream is not None,
        "_error": err,
        "_keep": keep,
        # The key this request came with: removed from its own bodies if it appears there.
        "_key": presented_key(call.headers) if keep else None,
    }


def trace_id(call: Call) -> str | None:
    """The call's trace id (32 hex digits): the tracer's, else the client's W3C traceparent."""
    tid = getattr(call, "trace_id", None)
    if isinstance(tid, str) and tid:
        return tid
    trace = getattr(call, "trace", None)
    root = getattr(trace, "root", None)
    if root is not None:
        try:
            ctx = root.get_span_context()
            if ctx.trace_id:
                return format(ctx.trace_id, "032x")
        except AttributeError:
            pass
    parent = call.headers.get("traceparent")
    if parent:
        parts = parent.strip().split("-")
        if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
            try:
                int(parts[1], 16)
            except ValueError:
                return None
            return parts[1].lower()
    return None


def log_row(entry: dict[str, Any], redactor: Redactor, max_chars: int) -> dict[str, Any]:
    """The `request_logs` row of an entry (in the writer's thread)."""
    request = entry["_body"]
    response = _response(entry)
    row = {k: v for k, v in entry.items() if not k.startswith("_")}
    row["request_bytes"] = len(orjson.dumps(request)) if request is not None else None
    row["response_bytes"] = len(orjson.dumps(response)) if response is not None else None
    row["request_body"] = row["response_body"] = None
    row["redactions"] = 0
    row["truncated"] = False
    if entry["_keep"]:
        (req, resp), redactions, truncated = render([request, response], redactor, max_chars, (entry["_key"],))
        row.update(request_body=req, response_body=resp, redactions=redactions, truncated=truncated)
    return row


def _response(entry: dict[str, Any]) -> dict[str, Any] | None:
    """What the client got: the response, a stream's output text, and/or the error."""
    err = entry["_error"]
    error = None if err is None else {"error": {"status": err.status, "type": err.type, "code": err.code,
                                                "param": err.param, "message": err.message}}
    if entry["_streaming"]:
        text = entry["_stream"]
        out: dict[str, Any] = {"output_text": "".join(text) if text is not None else None}
        return {**out, **error} if error else out
    return entry["_response"] if entry["_response"] is not None else error


def render(values: list[Any], redactor: Redactor, max_chars: int,
           secrets: Iterable[str | None] = ()) -> tuple[list[str | None], int, bool]:
    """Each value as redacted JSON text (None stays None), the number of findings, and whether
    anything was cut. One redaction pass over all their strings."""
    cuts = [_Cut(max_chars) for _ in values]
    shapes = [cut.walk(v) for cut, v in zip(cuts, values, strict=True)]
    texts = [t for cut in cuts for t in cut.texts]
    limits = [n for cut in cuts for n in cut.limits]
    out, found = _redact_all(texts, limits, redactor, secrets)
    rendered: list[str | None] = []
    at = 0
    for cut, shape, value in zip(cuts, shapes, values, strict=True):
        leaves = out[at:at + len(cut.texts)]
        at += len(cut.texts)
        rendered.append(None if value is None else orjson.dumps(_fill(shape, leaves)).decode())
    return rendered, found, any(c.truncated for c in cuts)


def _redact_all(texts: list[str], limits: list[int], redactor: Redactor,
                secrets: Iterable[str | None]) -> tuple[list[str], int]:
    if not texts:
        return [], 0
    starts: list[int] = []
    at = 0
    for t in texts:
        starts.append(at)
        at += len(t) + len(_SEP)
    spans = redactor.spans(_SEP.join(texts), secrets)
    per_leaf: list[list[Span]] = [[] for _ in texts]
    for s in spans:  # clipped to each string it touches (the separator stops every recognizer)
        i = bisect.bisect_right(starts, s.start) - 1
        while i < len(texts) and starts[i] < s.end:
            lo, hi = max(s.start, starts[i]) - starts[i], min(s.end, starts[i] + len(texts[i])) - starts[i]
            if hi > lo:
                per_leaf[i].append(Span(lo, hi, s.entity, s.score))
            i += 1
    found = sum(1 for i, leaf in enumerate(per_leaf) for s in leaf if s.start < limits[i])
    return [apply(t, per_leaf[i], limits[i]) for i, t in enumerate(texts)], found


class _Ref:
    """Where a (redacted) string goes back into a shape."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


class _Cut:
    """Walks a JSON value, spending a budget of characters on its strings in document order."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.truncated = False
        self.texts: list[str] = []  # what is scanned: the kept part and a margin past a cut
        self.limits: list[int] = []  # how much of each is kept

    def walk(self, v: Any) -> Any:
        if isinstance(v, str):
            return self._leaf(v, spend=True)
        if isinstance(v, dict):
            return {(k if not isinstance(k, str) or _NAME.fullmatch(k) else self._leaf(k, spend=False)): self.walk(x)
                    for k, x in v.items()}
        if isinstance(v, list | tuple):
            if len(v) > _NUMBERS and all(type(x) in (int, float) for x in v):
                self.truncated = True
                return f"<{len(v)} numbers>"
            out = []
            for i, x in enumerate(v):
                if self.budget <= 0:
                    self.truncated = True
                    out.append(f"<{len(v) - i} more items>")
                    break
                out.append(self.walk(x))
            return out
        return v

    def _leaf(self, s: str, spend: bool) -> _Ref:
        keep = len(s)
        if spend:
            keep = min(keep, max(self.budget, 0))
            self.budget -= keep
            if keep < len(s):
                self.truncated = True
                s = s[:keep + _MARGIN] if keep else ""
        self.texts.append(s)
        self.limits.append(keep)
        return _Ref(len(self.texts) - 1)


def _fill(v: Any, leaves: list[str]) -> Any:
    if type(v) is _Ref:
        return leaves[v.i]
    if isinstance(v, dict):
        return {_fill(k, leaves): _fill(x, leaves) for k, x in v.items()}
    if isinstance(v, list):
        return [_fill(x, leaves) for x in v]
    return v
