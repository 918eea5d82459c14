"""tus 1.0.0 at /files/, as an ASGI app (Starlette): routes, errors, CORS.

The protocol's parts: ``protocol`` (what is announced, headers parsed),
``bodies`` (streaming), ``handlers`` (one per method), ``responses`` (what is
answered). Beyond tus: ``GET /files/{id}`` answers JSON; ``POST /hooks/s3``
takes bucket event notifications (``vidpipe.infra.upload.hooks``);
``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidpipe.infra.errors import VidpipeError
from vidpipe.infra.upload.errors import Locked, Refused, Unavailable
from vidpipe.infra.upload.handlers import Service, Tus
from vidpipe.infra.upload.protocol import (
    FILES,
    TUS_VERSION,
    authorize,
    check_version,
    requested_method,
)
from vidpipe.infra.upload.responses import error_response, options_response

log = logging.getLogger("vidpipe.upload")

EXPOSED_HEADERS = (
    "Location", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires",
    "Upload-Concat", "Upload-Defer-Length", "Tus-Resumable", "Tus-Version", "Tus-Extension",
    "Tus-Max-Size", "Tus-Checksum-Algorithm", "Vidpipe-Upload-Status", "Vidpipe-Upload-Error",
)  # fmt: skip
ALLOWED_HEADERS = (
    "Authorization", "Content-Type", "Upload-Offset", "Upload-Length", "Upload-Metadata",
    "Upload-Defer-Length", "Upload-Concat", "Upload-Checksum", "Tus-Resumable",
    "X-HTTP-Method-Override", "X-Requested-With",
)  # fmt: skip


class _TusResumable:
    """Adds Tus-Resumable to every /files/ response except OPTIONS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not (scope["path"] == "/files" or scope["path"].startswith(FILES))
        ):
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"tus-resumable"]
                message = {
                    **message,
                    "headers": [*headers, (b"tus-resumable", TUS_VERSION.encode())],
                }
            await send(message)

        await self.app(scope, receive, send_with_version)


Handler = Callable[[Tus, Request], Awaitable[Response]]


def _endpoint(
    handler: Handler, tus_request: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        tus: Tus = request.app.state.tus
        try:
            if tus_request and request.method != "OPTIONS":
                authorize(request, tus.cfg.token)
            return await handler(tus, request)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        except (Refused, Locked, Unavailable) as exc:
            return await error_response(request, exc.status, str(exc), getattr(exc, "headers", {}))
        except VidpipeError as exc:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            status = 503 if exc.retryable else 500
            return await error_response(request, status, str(exc), {})
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return await error_response(request, 500, "internal error", {})

    return endpoint


async def _not_allowed(request: Request, method: str, allow: str) -> Response:
    return await error_response(request, 405, f"{method} is not allowed here", {"Allow": allow})


async def _collection(tus: Tus, request: Request) -> Response:
    method = requested_method(request)
    if method == "OPTIONS":
        return options_response(tus.cfg.max_size)
    check_version(request)
    if method == "POST":
        return await tus.create(request)
    return await _not_allowed(request, method, "OPTIONS, POST")


async def _resource(tus: Tus, request: Request) -> Response:
    upload_id = request.path_params["upload_id"]
    method = requested_method(request)
    if method == "OPTIONS":
        return options_response(tus.cfg.max_size)
    if method == "GET":
        return await tus.status(upload_id)
    check_version(request)
    if method == "HEAD":
        return await tus.head(upload_id)
    if method == "PATCH":
        return await tus.patch(request, upload_id)
    if method == "DELETE":
        return await tus.delete(upload_id)
    return await _not_allowed(request, method, "OPTIONS, HEAD, PATCH, DELETE")


async def _hook(tus: Tus, request: Request) -> Response:
    return await tus.s3_hook(request)


async def _health(tus: Tus, request: Request) -> Response:
    return PlainTextResponse("ok\n")


ServiceFactory = Callable[[], Awaitable[Service]]


def build_app(make_service: ServiceFactory, cors_origins: tuple[str, ...]) -> Starlette:
    """The ASGI app. ``make_service`` runs at startup; its janitor runs until shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = await make_service()
        app.state.tus = Tus(service)
        janitor = asyncio.create_task(service.janitor.run_forever())
        try:
            yield
        finally:
            janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await janitor
            await service.locks.close()
            await service.db.close()

    methods = ["OPTIONS", "POST", "HEAD", "PATCH", "DELETE", "GET"]
    routes = [
        Route("/files", _endpoint(_collection), methods=methods),
        Route(FILES, _endpoint(_collection), methods=methods),
        Route(FILES + "{upload_id}", _endpoint(_resource), methods=methods),
        Route(FILES + "{upload_id}/", _endpoint(_resource), methods=methods),
        Route("/hooks/s3", _endpoint(_hook, tus_request=False), methods=["POST"]),
        Route("/healthz", _endpoint(_health, tus_request=False), methods=["GET"]),
    ]
    middleware = [Middleware(_TusResumable)]
    if cors_origins:
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=methods,
                allow_headers=list(ALLOWED_HEADERS),
                expose_headers=list(EXPOSED_HEADERS),
                max_age=86400,
            ),
        )
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
