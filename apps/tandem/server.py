"""`make_base_app(...)`: any Tandem app; `make_app(...)`: a model service, serving a repository's models over
the Open Inference Protocol v2.

Routes only translate HTTP to the data plane and back; errors leave as `{"error": "..."}`.
"""

import asyncio
import gc
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from importlib.metadata import version as package_version
from typing import Any, ClassVar, Protocol

import httpx
import orjson
import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import grpc_server as grpc_transport
from .auth import AppTokenMiddleware
from .dataplane import DataPlane
from .fastpath import InferRoute
from .protocol import InferenceError, InferenceRequest, InferenceResponse, index_ready_only
from .repository import ModelRepository
from .settings import AppSettings, DaprSettings, ServiceSettings
from .sidecar import Sidecar, SidecarError

JSON = "application/json"
log = logging.getLogger(__name__)


# An app's own start-up and shutdown, run inside the kit's (which opens and closes the sidecar client).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
# Whether the app can serve now; (False, why) makes /v2/health/ready answer 503 {"error": why}.
ReadyCheck = Callable[[Request], Awaitable[tuple[bool, str]]]


class AsgiRoute(Protocol):
    """A plain-ASGI route: answers its own paths, passes the others on to the app it wraps, and documents its paths
    (OpenAPI path items; every operation gets the kit's error response as its default)."""

    openapi_paths: ClassVar[dict[str, Any]]

    def __init__(self, app: ASGIApp) -> None: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def make_base_app(
    name: str,
    settings: AppSettings,
    dapr: DaprSettings | None = None,
    routers: tuple[APIRouter, ...] = (),
    lifespan: Lifespan | None = None,
    ready: ReadyCheck | None = None,
    app_token_only_under: tuple[str, ...] | None = None,
    asgi_routes: tuple[type[AsgiRoute], ...] = (),
) -> FastAPI:
    """Any Tandem app: health, /metrics, /docs, body limit, app-token check (on every path, or only on paths under
    `app_token_only_under`), errors as {"error": ...}, and `app.state.sidecar`, the pooled client to its sidecar.
    `asgi_routes` answer their paths before FastAPI's router does, after the token check and the body limit."""
    dapr = dapr or DaprSettings()

    @asynccontextmanager
    async def kit_lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.sidecar = Sidecar.from_settings(dapr)
        try:
            if lifespan is None:
                _freeze_start_up()
                yield
            else:
                async with lifespan(app):
                    _freeze_start_up()
                    yield
        finally:
            await app.state.sidecar.aclose()

    app = FastAPI(title=f"Tandem {name}", version=package_version("tandem"), lifespan=kit_lifespan)
    for route in asgi_routes:  # the first added is the innermost
        app.add_middleware(route)
    app.add_middleware(JsonByDefaultMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(AppTokenMiddleware, token=dapr.app_api_token, only_under=app_token_only_under)
    _add_error_handlers(app)
    app.include_router(_health_router(ready))
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    for router in routers:
        app.include_router(router)
    app.openapi = lambda: _openapi(app, asgi_routes)  # type: ignore[method-assign]  # FastAPI's documented way to extend it
    return app


def _freeze_start_up() -> None:
    """Keeps what start-up made (modules, the app, loaded models: most of a process's objects, and never garbage)
    out of the garbage collector's full collections from now on. Each of those walked them all: seven of 54-103 ms
    in features in one benchmark run, and of 90 ms in alerts, every request waiting meanwhile."""
    gc.collect()
    gc.freeze()


def make_app(
    name: str,
    settings: ServiceSettings,
    dapr: DaprSettings | None = None,
    routers: tuple[APIRouter, ...] = (),
    every_model: bool = False,
) -> FastAPI:
    """A model server `name`: the base app plus OIP routes for the models of `settings.model_repository` whose card
    names the service `name` (every model of it with `every_model`), narrowed to `settings.models` if given; and the
    same over gRPC on `settings.grpc_port` unless it is 0."""
    dapr = dapr or DaprSettings()

    @asynccontextmanager
    async def load_models(app: FastAPI) -> AsyncIterator[None]:
        # Models load before the server accepts connections, so "ready" means every model that could load is warm;
        # one that cannot is UNAVAILABLE with its reason and the others serve.
        repository = ModelRepository(
            settings.model_repository,
            None if every_model else name,
            settings.intra_op_threads,
            settings.batching,
            settings.models,
        )
        await repository.load_all()
        app.state.dataplane = dataplane = DataPlane(repository, name, package_version("tandem"))
        sidecar = app.state.sidecar
        # The Open Inference Protocol over gRPC on a port of its own, on this event loop, over the same data plane.
        grpc_server = None
        if settings.grpc_port:
            grpc_server = await grpc_transport.start(
                dataplane,
                lambda model, change: announce(sidecar, settings, name, model, change),
                settings.host,
                settings.grpc_port,
                dapr.app_api_token,
                settings.max_body_bytes,
            )
        registering = asyncio.create_task(keep_registered(sidecar, settings))
        yield
        registering.cancel()
        with suppress(asyncio.CancelledError):
            await registering
        if grpc_server is not None:
            await grpc_server.stop(grace=5)

    async def can_serve(request: Request) -> tuple[bool, str]:
        return request.app.state.dataplane.repository.ready()

    routers = (_oip_router(name, settings), *routers)
    return make_base_app(
        name, settings, dapr, routers, lifespan=load_models, ready=can_serve, asgi_routes=(InferRoute,)
    )


async def announce(sidecar: Sidecar, settings: ServiceSettings, service: str, model: str, change: str) -> None:
    """Publishes that `model` was loaded or unloaded (the gateway listens). Best effort: the change is done whether or
    not anyone hears of it (the gateway also refreshes on its own)."""
    if not settings.model_changes_topic:
        return
    try:
        await sidecar.publish(
            settings.model_changes_pubsub,
            settings.model_changes_topic,
            {"service": service, "model": model, "change": change},
        )
    except (SidecarError, httpx.TransportError) as error:
        log.warning("could not announce that model %s was %s: %s", model, change, error)


async def keep_registered(sidecar: Sidecar, settings: ServiceSettings) -> None:
    """Tells the gateway, through the sidecar, that this app serves models, now and every `register_seconds` (so a
    restarted gateway learns of it again); it reads this app's repository index then. Sooner while it fails: under
    `dapr run` the app starts before its sidecar."""
    if not settings.gateway_app:
        return
    delay = 1.0
    while True:
        try:
            answer = await sidecar.invoke(settings.gateway_app, "services/register", content=b"", timeout=5)
            registered = answer.status_code == 200
        except httpx.TransportError:
            registered = False
        if not registered:
            log.debug("not registered with the gateway %s yet", settings.gateway_app)
        delay = settings.register_seconds if registered else min(2 * delay, settings.register_seconds)
        await asyncio.sleep(delay)


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses bodies over `limit` bytes with 413 on every route, before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, f"request body of {int(declared)} bytes is over the limit of {self.limit}")
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, f"request body is over the limit of {self.limit} bytes")


async def _too_large(send: Send, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class OrjsonBodyRoute(APIRoute):
    """A route whose JSON body FastAPI reads with orjson instead of the standard library's decoder: a batch of 30
    sensor readings (19 KB) took 360 µs to decode, a fifth of the sensors service's time per batch. A body that is
    not JSON still gets FastAPI's 422 (orjson's error is a json.JSONDecodeError)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_with_orjson(request: Request) -> Response:
            return await handle(_OrjsonRequest(request.scope, request.receive))

        return handle_with_orjson


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JsonByDefaultMiddleware:
    """A body sent without Content-Type is read as JSON (curl -d sends form encoding, others send none)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            content_type = next((value for name, value in headers if name == b"content-type"), None)
            if content_type is None or content_type == b"application/x-www-form-urlencoded":
                scope = {
                    **scope,
                    "headers": [*(h for h in headers if h[0] != b"content-type"), (b"content-type", JSON.encode())],
                }
        await self.app(scope, receive, send)


def serve(app_path: str, settings: AppSettings, dapr: DaprSettings | None = None) -> None:
    """Runs `module:app` with uvicorn on APP_PORT (set by Dapr) or the service's own port."""
    dapr = dapr or DaprSettings()
    uvicorn.run(
        app_path,
        host=settings.host,
        port=dapr.app_port or settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_seconds,
    )


def _health_router(check: ReadyCheck | None) -> APIRouter:
    router = APIRouter(tags=["Health"])

    @router.get("/v2/health/live", response_class=Response)
    async def live() -> Response:
        return Response(status_code=200)

    @router.get("/v2/health/ready", response_class=Response)
    async def ready(request: Request) -> Response:
        if check is not None:
            is_ready, why = await check(request)
            if not is_ready:
                return _error(503, why)
        return Response(status_code=200)

    return router


def _oip_router(service: str, settings: ServiceSettings) -> APIRouter:
    router = APIRouter(tags=["Open Inference Protocol v2"])

    def dataplane(request: Request) -> DataPlane:
        return request.app.state.dataplane

    @router.get("/v2")
    async def server_metadata(request: Request) -> dict[str, Any]:
        return dataplane(request).server_metadata()

    @router.get("/v2/models/{model}")
    @router.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(request: Request, model: str, version: str | None = None) -> dict[str, Any]:
        return dataplane(request).model_metadata(model, version)

    @router.get("/v2/models/{model}/ready", response_class=Response)
    @router.get("/v2/models/{model}/versions/{version}/ready", response_class=Response)
    async def model_ready(request: Request, model: str, version: str | None = None) -> Response:
        dataplane(request).model_ready(model, version)
        return Response(status_code=200)

    @router.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, Any]]:
        return dataplane(request).index(index_ready_only(await request.body()))

    @router.post("/v2/repository/models/{model}/load", response_class=Response)
    async def load_model(request: Request, model: str) -> Response:
        await dataplane(request).load(model)
        await announce(request.app.state.sidecar, settings, service, model, "loaded")
        return Response(status_code=200)

    @router.post("/v2/repository/models/{model}/unload", response_class=Response)
    async def unload_model(request: Request, model: str) -> Response:
        await dataplane(request).unload(model)
        await announce(request.app.state.sidecar, settings, service, model, "unloaded")
        return Response(status_code=200)

    return router


async def _metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceError)
    async def inference_error(request: Request, error: InferenceError) -> JSONResponse:
        return _error(error.status_code, str(error))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return _error(422, f"invalid request at '{where}': {first['msg']}")

    # 5xx bodies name what failed and a request id, never the error's own text (it can carry addresses, keys or
    # what Redis said): that goes to the log under the same id.
    @app.exception_handler(SidecarError)
    async def sidecar_error(request: Request, error: SidecarError) -> JSONResponse:
        return _server_error(request, 502, f"{error.what}: the Dapr sidecar answered {error.status}", error)

    @app.exception_handler(httpx.TransportError)
    async def sidecar_unreachable(request: Request, error: httpx.TransportError) -> JSONResponse:
        return _server_error(request, 503, f"the Dapr sidecar could not be reached ({type(error).__name__})", error)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        return _server_error(request, 500, "internal error", error)


# What a caller may send as its own request id (the gateway passes one on); anything else gets a new one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _server_error(request: Request, status: int, message: str, error: Exception) -> JSONResponse:
    sent = request.headers.get("x-request-id", "")
    request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
    log.error("%s %s: %s (request id %s)", request.method, request.url.path, message, request_id, exc_info=error)
    return _error(status, f"{message} (request id {request_id})", {"x-request-id": request_id})


# What every route may answer besides its own: the kit's error handlers and middleware answer {"error": "..."}; a
# sidecar in between (the only way in when APP_API_TOKEN is set) answers its own refusals in Dapr's error shape.
_ERROR_RESPONSE = {
    "description": "An error: 4xx for what was wrong with the request, 5xx when the service or a sidecar failed",
    "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ERROR_SCHEMA = {
    "anyOf": [
        {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
        {
            "type": "object",
            "properties": {"errorCode": {"type": "string"}, "message": {"type": "string"}},
            "required": ["errorCode", "message"],
        },
    ]
}


def _openapi(app: FastAPI, asgi_routes: tuple[type[AsgiRoute], ...]) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        # The plain-ASGI routes are not FastAPI's: they document themselves.
        for route in asgi_routes:
            schema["paths"].update(route.openapi_paths)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        # The infer routes read and write their bodies themselves; register the schemas they document.
        for message in (InferenceRequest, InferenceResponse):
            message_schema = message.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(message_schema.pop("$defs", {}))
            components[message.__name__] = message_schema
        # Errors, 422 included, are {"error": ...}, not FastAPI's {"detail": [...]}.
        components["Error"] = _ERROR_SCHEMA
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation["responses"].pop("422", None)
                operation["responses"]["default"] = _ERROR_RESPONSE
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema
