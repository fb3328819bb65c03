"""The hot API routes as raw ASGI, in front of FastAPI.

FastAPI declares every route (OpenAPI, `/docs`) and would serve these the same way; the fast
path only skips the framework's per-request machinery — its middleware stack, regex route
matching and dependency solving — which py-spy measured at ~40 % of the gateway's CPU per
request under load. An endpoint opts in with `@fast_path`; it must take only the `Request`.
Everything else (path parameters, WebSockets, docs, 404s) goes to FastAPI unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from faregate.http.responses import exception_response

Endpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)


def fast_path(endpoint: E) -> E:
    endpoint.fast_path = True  # type: ignore[attr-defined]
    return endpoint


def fast_routes(routers: Iterable[APIRouter]) -> dict[tuple[str, str], Endpoint]:
    """(method, path) -> endpoint for every `@fast_path` route of these routers."""
    out: dict[tuple[str, str], Endpoint] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and getattr(route.endpoint, "fast_path", False):
                for method in route.methods:
                    out[(method, route.path)] = route.endpoint
    return out


class FastPath:
    def __init__(self, app: FastAPI, routes: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self.app
                try:
                    response = await endpoint(Request(scope, receive, send))
                except ClientDisconnect:
                    return  # the client left while sending its body: nobody to answer
                except Exception as exc:
                    response = exception_response(exc, scope["path"])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
