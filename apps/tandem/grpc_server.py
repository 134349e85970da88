"""The OIP `GRPCInferenceService` of a model service: the transport only, over the same data plane as the REST routes.

Errors of the kit's hierarchy (`InferenceError` and its subclasses, by their HTTP status) leave as gRPC status codes
with their message, mapped in `grpc_status` alone. As on REST, a call must carry the app token (`dapr-api-token`,
which the sidecar sends) when APP_API_TOKEN is set; the health calls stay open. Dapr's sidecar checks a gRPC app's
health with `dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck`, Kubernetes' gRPC probes with
`grpc.health.v1.Health/Check`: both are answered here with the service's readiness (Kubernetes' `live` service:
the process answering at all).
"""

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .dataplane import DataPlane
from .grpc_protocol import SERVICE, decode_request, encode_response, message
from .protocol import InferenceError

log = logging.getLogger(__name__)

# The kit's errors carry an HTTP status; this is their gRPC status, in one place.
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
INDEX_FIELDS = ("name", "version", "state", "reason")
OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})
_DAPR_HEALTH = ("dapr.proto.runtime.v1.AppCallbackHealthCheck", "HealthCheck")
_GRPC_HEALTH = ("grpc.health.v1.Health", "Check")
# grpc.health.v1's HealthCheckResponse {status: SERVING (1) | NOT_SERVING (2)}, encoded: the message has one enum field
# and its request one string (the service asked about), so neither needs generated code.
_SERVING, _NOT_SERVING = b"\x08\x01", b"\x08\x02"

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def grpc_status(error: InferenceError) -> grpc.StatusCode:
    return _STATUS.get(error.status_code, grpc.StatusCode.INTERNAL)


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    return next((value for name, value in context.invocation_metadata() or () if name == key), "")


class InferenceService:
    """The protocol's calls, each translating a message to the data plane and back. `announce(model, change)` tells
    others of a load or unload, as the REST routes do."""

    def __init__(self, dataplane: DataPlane, announce: Callable[[str, str], Awaitable[None]]):
        self.dataplane = dataplane
        self.announce = announce

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return message("ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return message("ServerReadyResponse")(ready=self.dataplane.repository.ready()[0])

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            ready = self.dataplane.model_ready(request.name, request.version or None)
        except InferenceError as error:
            if error.status_code != 503:  # a model that failed to load is known, and not ready
                raise
            ready = False
        return message("ModelReadyResponse")(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return message("ServerMetadataResponse")(**self.dataplane.server_metadata())

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return message("ModelMetadataResponse")(**self.dataplane.model_metadata(request.name, request.version or None))

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model, results = await self.dataplane.run(
            request.model_name, request.model_version or None, lambda: decode_request(request)
        )
        # Raw in, raw out (tritonclient always sends raw and reads only raw); typed contents answer typed contents.
        return encode_response(model.name, model.version, request.id, results, raw=bool(request.raw_input_contents))

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # The index's entries carry more than the message has (a ready model's tensors): its four fields.
        entries = [
            {key: entry.get(key, "") for key in INDEX_FIELDS}
            for entry in self.dataplane.index(ready_only=request.ready)
        ]
        return message("RepositoryIndexResponse")(models=entries)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.dataplane.load(request.model_name)
        await self.announce(request.model_name, "loaded")
        return message("RepositoryModelLoadResponse")()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.dataplane.unload(request.model_name)
        await self.announce(request.model_name, "unloaded")
        return message("RepositoryModelUnloadResponse")()

    async def dapr_health(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ready, why = self.dataplane.repository.ready()
        if not ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, why)
        return b""  # HealthCheckResponse has no fields: its encoding is empty

    async def grpc_health(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # HealthCheckRequest's one field is the service's name (field 1, a string): "live" asks for liveness.
        if request[2:] == b"live" or self.dataplane.repository.ready()[0]:
            return _SERVING
        return _NOT_SERVING


def _guarded(method: str, handler: Handler, token: str) -> Handler:
    """`handler` with the app-token check (unless `method` is open) and the kit's errors as gRPC status codes."""
    expected = token.encode()

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if expected and method not in OPEN_METHODS:
            sent = metadata_value(context, "dapr-api-token").encode()
            if not hmac.compare_digest(sent, expected):
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong dapr-api-token: call this app through its Dapr sidecar",
                )
        try:
            return await handler(request, context)
        except grpc.aio.AbortError:
            raise
        except InferenceError as error:
            await context.abort(grpc_status(error), str(error))
        except Exception as error:  # the message names a request id, never the error's own text (as on REST)
            request_id = uuid.uuid4().hex
            log.error("gRPC %s: internal error (request id %s)", method, request_id, exc_info=error)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")

    return call


# The request message of each call of the protocol.
_REQUESTS = {
    "ServerLive": "ServerLiveRequest",
    "ServerReady": "ServerReadyRequest",
    "ModelReady": "ModelReadyRequest",
    "ServerMetadata": "ServerMetadataRequest",
    "ModelMetadata": "ModelMetadataRequest",
    "ModelInfer": "ModelInferRequest",
    "RepositoryIndex": "RepositoryIndexRequest",
    "RepositoryModelLoad": "RepositoryModelLoadRequest",
    "RepositoryModelUnload": "RepositoryModelUnloadRequest",
}


def handlers(service: InferenceService, token: str) -> tuple[grpc.GenericRpcHandler, ...]:
    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            _guarded(name, getattr(service, name), token),
            request_deserializer=message(request).FromString,
            response_serializer=lambda response: response.SerializeToString(),
        )
        for name, request in _REQUESTS.items()
    }
    dapr_health = grpc.unary_unary_rpc_method_handler(_guarded("HealthCheck", service.dapr_health, ""))
    grpc_health = grpc.unary_unary_rpc_method_handler(_guarded("Check", service.grpc_health, ""))
    return (
        grpc.method_handlers_generic_handler(SERVICE, methods),
        grpc.method_handlers_generic_handler(_DAPR_HEALTH[0], {_DAPR_HEALTH[1]: dapr_health}),
        grpc.method_handlers_generic_handler(_GRPC_HEALTH[0], {_GRPC_HEALTH[1]: grpc_health}),
    )


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    # gRPC refuses messages over 4 MiB by default; the service's body limit says how large a request may be.
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


async def start(
    dataplane: DataPlane,
    announce: Callable[[str, str], Awaitable[None]],
    host: str,
    port: int,
    token: str,
    max_message_bytes: int,
) -> grpc.aio.Server:
    """The service's gRPC server, started on `host:port` on the running event loop (the one the REST routes use)."""
    server = grpc.aio.server(options=server_options(max_message_bytes))
    server.add_generic_rpc_handlers(handlers(InferenceService(dataplane, announce), token))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
