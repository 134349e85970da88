"""The gateway's Open Inference Protocol over gRPC: the same API keys, rate limits, routing by model name and circuit
breakers as its REST routes, for clients of `inference.GRPCInferenceService` (tritonclient.grpc, KServe's client).

A model's calls go, their bytes untouched, to the owning service's gRPC app (app id `<service><grpc_app_suffix>`,
the sidecar whose app channel is gRPC) through the gateway's own sidecar: its gRPC API port proxies any call with
`dapr-app-id` metadata. The server's own calls (live, ready, metadata, the repository index) are answered here. The
gateway loads and unloads nothing, as over REST.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from starlette.exceptions import HTTPException

from tandem.grpc_protocol import SERVICE, message
from tandem.grpc_server import INDEX_FIELDS, metadata_value, server_options

from .breaker import CircuitBreaker
from .proxy import REQUESTS, SECONDS

log = logging.getLogger(__name__)

# The gateway's refusals (HTTPException, shared with REST) as gRPC status codes.
_REFUSALS = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# What the service may learn of the client's call; the API key stays here.
PASSED_METADATA = ("traceparent", "tracestate", "x-request-id")
# Answers that say the service is down rather than the request wrong: what the breaker counts.
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# Calls about one model, and the field of their request that names it.
MODEL_CALLS = {
    "ModelReady": ("ModelReadyRequest", "name"),
    "ModelMetadata": ("ModelMetadataRequest", "name"),
    "ModelInfer": ("ModelInferRequest", "model_name"),
}


class GrpcGateway:
    """`state` is the gateway app's state (keys, limiter, directory, breakers); `identify(state, key)` and
    `ready(state)` are the REST side's own checks."""

    def __init__(
        self,
        state: Any,
        identify: Callable[[Any, str | None], str],
        presented_key: Callable[[Mapping[str, str]], str | None],
        ready: Callable[[Any], Any],
        new_breaker: Callable[[], CircuitBreaker],
        sidecar_address: str,
        dapr_api_token: str,
        app_suffix: str,
        timeout: float,
        max_message_bytes: int,
        server_metadata: dict[str, Any],
    ):
        self.state = state
        self.identify = identify
        self.presented_key = presented_key
        self.ready = ready
        self.new_breaker = new_breaker
        self.dapr_api_token = dapr_api_token
        self.app_suffix = app_suffix
        self.timeout = timeout
        self.server_metadata = server_metadata
        self.channel = grpc.aio.insecure_channel(sidecar_address, options=server_options(max_message_bytes))

    async def close(self) -> None:
        await self.channel.close()

    async def _refused(self, context: grpc.aio.ServicerContext, error: HTTPException) -> None:
        await context.abort(_REFUSALS.get(error.status_code, grpc.StatusCode.INTERNAL), str(error.detail))

    def _authenticated(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = {name: value for name, value in context.invocation_metadata() or () if isinstance(value, str)}
            try:
                self.identify(self.state, self.presented_key(metadata))
            except HTTPException as error:
                await self._refused(context, error)
            return await handler(request, context)

        return call

    async def server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return message("ServerLiveResponse")(live=True).SerializeToString()

    async def server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        is_ready, _ = await self.ready(self.state)
        return message("ServerReadyResponse")(ready=is_ready).SerializeToString()

    async def server_metadata_call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return message("ServerMetadataResponse")(**self.server_metadata).SerializeToString()

    async def repository_index(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ready_only = message("RepositoryIndexRequest").FromString(request).ready
        entries = [
            {key: entry.get(key, "") for key in INDEX_FIELDS}
            for entry in self.state.directory.listing()
            if not ready_only or entry["state"] == "READY"
        ]
        return message("RepositoryIndexResponse")(models=entries).SerializeToString()

    async def not_here(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the gateway does not load or unload models: call the service that owns the model",
        )
        raise AssertionError("context.abort raises")

    def model_call(self, method: str) -> Callable[..., Any]:
        request_type, field = MODEL_CALLS[method]
        parse = message(request_type).FromString
        forward = self.channel.unary_unary(f"/{SERVICE}/{method}")

        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                model = getattr(parse(request), field)
            except DecodeError:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a {request_type}")
            try:
                service = await self.state.directory.owner(model)
                if service is None:
                    raise HTTPException(
                        404, f"model {model!r} is not served by any service (RepositoryIndex lists them)"
                    )
            except HTTPException as error:
                await self._refused(context, error)
            return await self._forward(service, forward, request, context)

        return call

    async def _forward(self, service: str, forward: Any, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        breaker = self.state.breakers.setdefault(service, self.new_breaker())
        wait = breaker.wait()
        if wait:
            REQUESTS.labels(service, "UNAVAILABLE").inc()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"service {service!r} is failing: its circuit breaker is open; the next try goes through in "
                f"{wait:.0f} s",
            )
        metadata = [("dapr-app-id", service + self.app_suffix)]
        if self.dapr_api_token:
            metadata.append(("dapr-api-token", self.dapr_api_token))
        for name in PASSED_METADATA:
            if value := metadata_value(context, name):
                metadata.append((name, value))
        if not metadata_value(context, "x-request-id"):
            metadata.append(("x-request-id", uuid.uuid4().hex))
        started = time.perf_counter()
        try:
            answer = await forward(request, metadata=metadata, timeout=self.timeout)
        except asyncio.CancelledError:  # the client went away: no verdict on the service
            breaker.abandoned()
            raise
        except grpc.aio.AioRpcError as error:
            code = error.code()
            REQUESTS.labels(service, code.name).inc()
            if code in _UNAVAILABLE:
                breaker.failed()
                await context.abort(code, f"service {service!r} is unavailable: {error.details()}")
            breaker.succeeded()  # the service answered: the request was wrong, not the service
            await context.abort(code, error.details() or code.name)
        finally:
            SECONDS.labels(service).observe(time.perf_counter() - started)
        breaker.succeeded()
        REQUESTS.labels(service, "OK").inc()
        return answer

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        raw = grpc.unary_unary_rpc_method_handler
        methods = {
            "ServerLive": raw(self.server_live),
            "ServerReady": raw(self.server_ready),
            "ServerMetadata": raw(self._authenticated(self.server_metadata_call)),
            "RepositoryIndex": raw(self._authenticated(self.repository_index)),
            "RepositoryModelLoad": raw(self._authenticated(self.not_here)),
            "RepositoryModelUnload": raw(self._authenticated(self.not_here)),
            **{method: raw(self._authenticated(self.model_call(method))) for method in MODEL_CALLS},
        }
        return (grpc.method_handlers_generic_handler(SERVICE, methods),)


async def start(gateway: GrpcGateway, host: str, port: int, max_message_bytes: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options(max_message_bytes))
    server.add_generic_rpc_handlers(gateway.handlers())
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
