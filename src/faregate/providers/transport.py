"""The shared, pooled HTTP transport every HTTP provider sends through.

One aiohttp `ClientSession` per process (keep-alive, HTTP/1.1, DNS cache), created at start-up
on the running loop. It times every wait on the upstream into `call.upstream_wait` and turns
every upstream failure into an `UpstreamError` with a retryable flag, so providers and the
invoke stage never see aiohttp exceptions.

HTTP/2: aiohttp speaks HTTP/1.1 only. With a keep-alive pool sized to the concurrency, HTTP/1.1
costs no extra handshakes on the hot path; h2 would pay off only for thousands of concurrent
streams to one host, which is not the case we optimise for yet.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from faregate.core.errors import GatewayError, scrub
from faregate.providers.timeouts import Timeouts
from faregate.wire import sse

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.routing.deployment import Deployment


class UpstreamError(GatewayError):
    """An upstream failed. `retryable` says whether another attempt could succeed."""

    __slots__ = ("retryable", "retry_after", "upstream_status", "kind")

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str,
        retryable: bool,
        type: str = "api_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        headers = {"retry-after": str(max(1, round(retry_after)))} if retry_after is not None else None
        super().__init__(status, message, type=type, code=code, param=param, headers=headers)
        self.kind = kind  # "status" | "timeout" | "connection" | "disconnect" | "protocol"
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status


def _error_fields(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) from an OpenAI- or Anthropic-shaped error body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip() or "no error body", None, None, None
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(err, str):
        return err, None, None, None
    if not isinstance(err, dict):
        return str(err)[:300], None, None, None
    code = err.get("code")
    return (
        str(err.get("message") or err.get("detail") or "no error message"),
        err.get("type") if isinstance(err.get("type"), str) else None,
        str(code) if code is not None else None,
        err.get("param") if isinstance(err.get("param"), str) else None,
    )


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return float(value)
        except ValueError:
            pass
        try:  # the HTTP-date form
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds()) if when.tzinfo else None
    return None


def status_error(dep: Deployment, status: int, body: bytes, headers: Any) -> UpstreamError:
    message, etype, code, param = _error_fields(body)
    text = f"Upstream '{dep.id}' returned HTTP {status}: {scrub(message)}"
    if status == 429:
        return UpstreamError(429, text, kind="status", retryable=True, type="rate_limit_error",
                             code=code or "upstream_rate_limited", retry_after=_retry_after(headers),
                             upstream_status=status)
    if status in (401, 403):
        # The client's credentials are fine; the gateway's credentials for this upstream are not.
        return UpstreamError(502, text, kind="status", retryable=True, code="upstream_auth_failed",
                             upstream_status=status)
    if status == 408:
        return UpstreamError(504, text, kind="timeout", retryable=True, code="upstream_timeout",
                             upstream_status=status)
    if 400 <= status < 500:
        return UpstreamError(status, text, kind="status", retryable=False,
                             type=etype or "invalid_request_error", code=code or "upstream_bad_request",
                             param=param, upstream_status=status)
    return UpstreamError(502, text, kind="status", retryable=True, code="upstream_error",
                         retry_after=_retry_after(headers), upstream_status=status)


class Transport:
    def __init__(self, *, connect_timeout: float = 5.0, max_per_host: int = 512) -> None:
        self.connect_timeout = connect_timeout
        self.max_per_host = max_per_host
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[Timeouts, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self.max_per_host, keepalive_timeout=60, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",),
                headers={"user-agent": "faregate"},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Transport.start() was not awaited")
        return self._session

    def _client_timeout(self, t: Timeouts) -> aiohttp.ClientTimeout:
        # A handful of distinct Timeouts exist (per deployment, stream or not): build each once.
        ct = self._timeouts.get(t)
        if ct is None:
            if len(self._timeouts) > 1000:  # clients' x-faregate-timeout values
                self._timeouts.clear()
            # An idle limit no shorter than the total adds nothing but a timer reset per read.
            idle = t.idle if t.idle < t.total else None
            ct = self._timeouts[t] = aiohttp.ClientTimeout(total=t.total, sock_connect=min(t.connect, t.total), sock_read=idle)
        return ct

    def _plain_timeout(self, t: Timeouts) -> aiohttp.ClientTimeout:
        """A non-stream answer's first byte comes when it is ready: first_byte bounds it all."""
        if t.first_byte is None:
            return self._client_timeout(t)
        return self._client_timeout(Timeouts(total=t.first_byte, connect=t.connect, idle=t.first_byte))

    async def post_json(self, call: Call, dep: Deployment, url: str, headers: dict[str, str],
                        payload: dict[str, Any], timeouts: Timeouts) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with self.session.post(url, data=orjson.dumps(payload), headers=headers,
                                         timeout=self._plain_timeout(timeouts)) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise status_error(dep, resp.status, body, resp.headers)
        except TimeoutError as exc:
            raise _timeout(dep, timeouts) from exc
        except aiohttp.ClientError as exc:
            raise _connection(dep, exc) from exc
        finally:
            call.upstream_wait += time.perf_counter() - started
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(502, f"Upstream '{dep.id}' sent a response that is not JSON.",
                                kind="protocol", retryable=True, code="upstream_bad_response") from None
        if not isinstance(doc, dict):
            raise UpstreamError(502, f"Upstream '{dep.id}' sent JSON that is not an object.",
                                kind="protocol", retryable=True, code="upstream_bad_response")
        return doc

    async def post_sse(self, call: Call, dep: Deployment, url: str, headers: dict[str, str],
                       payload: dict[str, Any], timeouts: Timeouts) -> AsyncIterator[tuple[str | None, bytes]]:
        """Yield (event, data) from an SSE response; raises UpstreamError before or during."""
        clock = time.perf_counter
        started = clock()
        # a stream's headers and first event within first_byte; later gaps within idle
        first = asyncio.timeout(timeouts.first_byte) if timeouts.first_byte is not None else None
        try:
            if first is not None:
                await first.__aenter__()
            async with self.session.post(url, data=orjson.dumps(payload), headers=headers,
                                         timeout=self._client_timeout(timeouts)) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise status_error(dep, resp.status, body, resp.headers)
                if "json" in resp.headers.get("content-type", "") and "event-stream" not in resp.headers.get("content-type", ""):
                    # Some servers answer a stream request with one JSON body (e.g. an error).
                    body = await resp.read()
                    raise UpstreamError(502, f"Upstream '{dep.id}' answered a stream request without a stream: {scrub(_error_fields(body)[0])}",
                                        kind="protocol", retryable=True, code="upstream_bad_response")
                call.upstream_wait += clock() - started
                events = sse.decode(resp.content)
                while True:
                    t0 = clock()
                    try:
                        item = await events.__anext__()
                    except StopAsyncIteration:
                        call.upstream_wait += clock() - t0
                        return
                    call.upstream_wait += clock() - t0
                    if first is not None:
                        await first.__aexit__(None, None, None)
                        first = None
                    yield item
        except TimeoutError as exc:
            raise _timeout(dep, timeouts) from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError(502, f"Upstream '{dep.id}' closed the stream before it ended.",
                                kind="disconnect", retryable=True, code="upstream_disconnected") from exc
        except aiohttp.ClientError as exc:
            raise _connection(dep, exc) from exc


def event_json(dep: Deployment, data: bytes) -> dict[str, Any]:
    """One stream event's JSON data, or the protocol error every provider reports for it."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise UpstreamError(502, f"Upstream '{dep.id}' sent a stream event that is not a JSON object.",
                            kind="protocol", retryable=False, code="upstream_bad_response")
    return doc


def _timeout(dep: Deployment, t: Timeouts) -> UpstreamError:
    return UpstreamError(504, f"Upstream '{dep.id}' did not answer in time (total {t.total:g}s, idle {t.idle:g}s).",
                         kind="timeout", retryable=True, code="upstream_timeout")


def _connection(dep: Deployment, exc: BaseException) -> UpstreamError:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamError(502, f"Upstream '{dep.id}' closed the connection.",
                             kind="disconnect", retryable=True, code="upstream_disconnected")
    return UpstreamError(502, f"Cannot reach upstream '{dep.id}': {type(exc).__name__}.",
                         kind="connection", retryable=True, code="upstream_connection_error")
