"""The gateway: one entry point with API keys and rate limits, routing each model's requests to the service that
owns it through the sidecars, with `/v2/models` across services, a circuit breaker per service and `/status`."""

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from importlib.metadata import version as package_version
from typing import Annotated, Any, ClassVar

import httpx
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic_settings import SettingsConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from tandem.fastpath import read_body, send_answer
from tandem.server import make_base_app
from tandem.settings import AppSettings, DaprSettings, Names

from .breaker import CircuitBreaker
from .directory import ModelDirectory
from .grpc_proxy import GrpcGateway
from .grpc_proxy import start as start_grpc
from .keys import ApiKeys
from .proxy import Forwarded, Forwarder
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)


class GatewaySettings(AppSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    port: int = 8000
    # The app ids of the model services the gateway routes to; others are added when they register
    # (POST /services/register through their sidecar, as every Tandem model server does at start-up).
    services: Names = ["vision", "nlp", "regression"]
    # As large as the largest model service's limit (vision's 16 MiB images).
    max_body_bytes: int = 16 * 1024 * 1024
    # API keys: one secret of a Dapr secret store, its entries client name -> key.
    secret_store: str = "secretstore"
    api_keys_secret: str = "gateway-api-keys"
    # Requests per second per API key on average, and how many may come at once; 0 turns the limit off.
    rate_limit: float = 50.0
    rate_burst: int = 100
    # Just over the resiliency policy's 30 s inference timeout: the sidecar gives up first and says why.
    timeout_seconds: float = 35.0
    breaker_failures: int = 5
    breaker_open_seconds: float = 10.0
    # How often API keys and model indexes are read again (besides model-change announcements).
    refresh_seconds: float = 30.0
    readiness_timeout_seconds: float = 2.0
    pubsub: str = "pubsub"
    model_changes_topic: str = "model-changes"
    # The Open Inference Protocol over gRPC for clients (0: off). A model's calls go to the owning service's gRPC
    # app, whose app id is the service's with this suffix (its second sidecar, whose app channel is gRPC).
    grpc_port: int = 0
    grpc_app_suffix: str = "-grpc"


settings = GatewaySettings()
dapr = DaprSettings()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    sidecar = app.state.sidecar
    app.state.keys = ApiKeys(sidecar, settings.secret_store, settings.api_keys_secret)
    app.state.directory = ModelDirectory(sidecar, settings.services, settings.readiness_timeout_seconds)
    app.state.breakers = {service: new_breaker() for service in settings.services}
    app.state.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
    app.state.forwarder = Forwarder(dapr.sidecar_url, dapr.dapr_api_token, settings.timeout_seconds)
    refresher = asyncio.create_task(keep_fresh(app))
    grpc_gateway = grpc_server = None
    if settings.grpc_port:
        grpc_gateway = GrpcGateway(
            app.state,
            identify,
            presented_key,
            gateway_ready,
            new_breaker,
            f"127.0.0.1:{dapr.dapr_grpc_port}",
            dapr.dapr_api_token,
            settings.grpc_app_suffix,
            settings.timeout_seconds,
            settings.max_body_bytes,
            SERVER_METADATA,
        )
        grpc_server = await start_grpc(grpc_gateway, settings.host, settings.grpc_port, settings.max_body_bytes)
    yield
    refresher.cancel()
    with suppress(asyncio.CancelledError):
        await refresher
    if grpc_server is not None and grpc_gateway is not None:
        await grpc_server.stop(grace=5)
        await grpc_gateway.close()
    await app.state.forwarder.aclose()


def new_breaker() -> CircuitBreaker:
    return CircuitBreaker(settings.breaker_failures, settings.breaker_open_seconds)


async def keep_fresh(app: FastAPI) -> None:
    """Reads API keys and model indexes now and then; every second while something could not be read (under
    `dapr run` the app starts before its sidecar)."""
    keys: ApiKeys = app.state.keys
    directory: ModelDirectory = app.state.directory
    while True:
        try:
            await keys.refresh()
            await directory.refresh()
        except Exception:  # a bug here must not stop the refreshing for good
            log.exception("refreshing API keys and model indexes failed")
        complete = not keys.error and not any(directory.errors.values())
        await asyncio.sleep(settings.refresh_seconds if complete else 1.0)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key of a request's headers (or a gRPC call's metadata): `Authorization: Bearer` or `X-API-Key`."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


def identify(state: Any, key: str | None) -> str:
    """The client behind an API key; 401 without a known key, 429 over the client's rate, 503 without keys to check
    (as HTTPException, which the gRPC server maps to its status codes)."""
    keys: ApiKeys = state.keys
    if not keys.clients:
        raise HTTPException(503, f"the gateway has no API keys to check against: {keys.error}")
    if key is None:
        raise HTTPException(
            401,
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    client = keys.client(key)
    if client is None:
        raise HTTPException(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
    retry_after = state.limiter.retry_after(client)
    if retry_after:
        raise HTTPException(
            429,
            f"rate limit of {settings.rate_limit:g} requests/s (bursts of {settings.rate_burst}) exceeded for client "
            f"{client!r}; retry after {retry_after} s",
            {"Retry-After": str(retry_after)},
        )
    return client


async def authenticate(request: Request) -> str:
    """The client behind the request's API key (see `identify`)."""
    return identify(request.app.state, presented_key(request.headers))


def services(request: Request) -> list[str]:
    """The app ids the gateway routes to: those configured and those that registered."""
    return list(request.app.state.directory.models)


async def service_readiness(request: Request) -> dict[str, str]:
    """Each service's readiness: "" when ready, else why not."""

    async def check(service: str) -> str:
        try:
            response = await request.app.state.sidecar.invoke(
                service, "v2/health/ready", http_method="GET", timeout=settings.readiness_timeout_seconds
            )
        except httpx.TransportError as error:
            return f"not reachable through the sidecar ({type(error).__name__})"
        return "" if response.status_code == 200 else f"answered {response.status_code}: {response.text[:200]}"

    names = services(request)
    answers = await asyncio.gather(*(check(service) for service in names))
    return dict(zip(names, answers, strict=True))


async def ready(request: Request) -> tuple[bool, str]:
    return await gateway_ready(request.app.state)


async def gateway_ready(state: Any) -> tuple[bool, str]:
    """Ready when the gateway itself can work: API keys loaded, its sidecar up, and each service's model index read
    once, or tried (so the first requests find the owner of their model). A model service that is down makes only its
    own models answer 503: it must not take the gateway, and the models of every other service, out of the load
    balancer."""
    problems = []
    if state.keys.error:
        problems.append(state.keys.error)
    try:
        outbound = await state.sidecar.http.get("/v1.0/healthz/outbound", timeout=settings.readiness_timeout_seconds)
        if outbound.status_code != 204:
            problems.append(f"its sidecar answered {outbound.status_code} to /v1.0/healthz/outbound")
    except httpx.TransportError as error:
        problems.append(f"its sidecar is not reachable ({type(error).__name__})")
    unread = [service for service, error in state.directory.errors.items() if error == "index not read yet"]
    if unread:
        problems.append(f"model indexes not read yet: {', '.join(unread)}")
    return not problems, "not ready: " + "; ".join(problems)


router = APIRouter(dependencies=[Depends(authenticate)], tags=["Gateway"])


SERVER_METADATA = {"name": "tandem-gateway", "version": package_version("tandem"), "extensions": []}


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return SERVER_METADATA


@router.get("/v2/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every model and pipeline of every service: name, version, state (READY or UNAVAILABLE, with the reason), the
    service that owns it and, when ready, its inputs and outputs."""
    return {"models": request.app.state.directory.listing()}


@router.post("/v2/repository/index")
async def repository_index(
    request: Request, options: Annotated[dict[str, Any] | None, Body()] = None
) -> list[dict[str, Any]]:
    """The OIP repository index across services (`{"ready": true}` lists only loaded models)."""
    ready_only = bool(options and options.get("ready") is True)
    return [entry for entry in request.app.state.directory.listing() if not ready_only or entry["state"] == "READY"]


async def forward_model_route(state: Any, scope: Scope, body: bytes, model: str) -> Forwarded:
    """Any OIP model route (metadata, ready, infer, with or without a version) of the service owning `model`."""
    service = await state.directory.owner(model)
    if service is None:
        raise HTTPException(404, f"model {model!r} is not served by any service (GET /v2/models lists them)")
    breaker = state.breakers.get(service) or state.breakers.setdefault(service, new_breaker())
    forwarded: Forwarded = await state.forwarder.forward(service, scope, body, breaker)
    return forwarded


def _forwarded(summary: str, parameters: list[str], method: str) -> dict[str, Any]:
    return {
        "tags": ["Gateway"],
        "summary": summary,
        "description": "Forwarded as it came to the service that owns `model`; its answer comes back as it was.",
        "operationId": f"model_route_{'_'.join(parameters)}_{method}",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in parameters
        ],
        "responses": {"200": {"description": "The service's answer", "content": {"application/json": {"schema": {}}}}},
    }


# Path segments as FastAPI matches "/v2/models/{model}" and "/v2/models/{model}/{rest:path}".
MODEL_PATH = re.compile(r"/v2/models/(?P<model>[^/]+)(?P<rest>/.*)?")


class ModelRoutes:
    """`/v2/models/{model}` and every path below it, forwarded as plain ASGI: the gateway's hot path, where FastAPI's
    routing and per-request dependency machinery cost more than the forwarding (bench/results/hotpath.md). The API
    key and rate limit are checked as on the gateway's other routes; other paths go on to the FastAPI app."""

    openapi_paths: ClassVar[dict[str, Any]] = {
        "/v2/models/{model}": {"get": _forwarded("Model metadata", ["model"], "get")},
        "/v2/models/{model}/{rest}": {
            method: _forwarded(
                "Any OIP model route (ready, infer, with or without a version)", ["model", "rest"], method
            )
            for method in ("get", "post")
        },
    }

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = MODEL_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        allowed = ("GET",) if match["rest"] is None else ("GET", "POST")
        try:
            if scope["method"] not in allowed:
                raise HTTPException(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
            state = scope["app"].state
            identify(state, presented_key(Headers(scope=scope)))
            body = await read_body(receive)
            if body is None:
                return  # the client went away
            forwarded = await forward_model_route(state, scope, body, match["model"])
        except HTTPException as error:
            await JSONResponse({"error": str(error.detail)}, error.status_code, error.headers)(scope, receive, send)
            return
        await send_answer(send, forwarded.status, forwarded.body, forwarded.headers)


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """The gateway's own readiness, then each service: ready or why not, its circuit breaker, its models."""
    breakers = request.app.state.breakers
    readiness = await service_readiness(request)
    directory: ModelDirectory = request.app.state.directory
    is_ready, why = await ready(request)
    return {
        "ready": is_ready,
        "problem": "" if is_ready else why,
        "api_keys": request.app.state.keys.error or f"{len(request.app.state.keys.clients)} loaded",
        "services": {
            service: {
                "ready": not readiness[service],
                "problem": readiness[service] or directory.errors[service],
                "breaker": breakers[service].state if service in breakers else "closed",
                "models": directory.models[service],
            }
            for service in readiness
        },
    }


# Called by the gateway's own sidecar (guarded by the app token, not by API keys).
events = APIRouter(include_in_schema=False)


@events.post("/services/register")
async def register(request: Request) -> dict[str, Any]:
    """A model server registers itself through its sidecar: the calling app id is the one Dapr vouches for
    (`dapr-caller-app-id`), and its models are read at once."""
    service = request.headers.get("dapr-caller-app-id")
    if not service:
        raise HTTPException(400, "register through your Dapr sidecar: the caller's app id comes from it")
    if request.app.state.directory.add(service):
        log.info("model server %s registered", service)
    await request.app.state.directory.refresh(service)
    return {"service": service, "models": len(request.app.state.directory.models[service])}


@events.get("/dapr/subscribe")
async def subscriptions() -> list[dict[str, str]]:
    return [{"pubsubname": settings.pubsub, "topic": settings.model_changes_topic, "route": "/events/model-changes"}]


@events.post("/events/model-changes")
async def model_changed(request: Request, event: Annotated[dict[str, Any], Body()]) -> dict[str, str]:
    """A service loaded or unloaded a model: read its index again. Nothing to retry if that fails: the periodic
    refresh catches up."""
    data = event.get("data")
    await request.app.state.directory.refresh(data.get("service") if isinstance(data, dict) else None)
    return {"status": "SUCCESS"}


app = make_base_app(
    "gateway",
    settings,
    dapr,
    routers=(router, events),
    lifespan=lifespan,
    ready=ready,
    app_token_only_under=("/dapr/", "/events/", "/services/"),
    asgi_routes=(ModelRoutes,),
)
