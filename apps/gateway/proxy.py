"""Forwards a client's request, as it came, to the service that owns the model, through the gateway's sidecar."""

import json
import math
import time
import uuid
from contextlib import suppress
from typing import Any, NamedTuple
from urllib.parse import quote

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import Scope

from tandem.upstream import Upstream, UpstreamError

from .breaker import CircuitBreaker

# What the model service needs to read the body and join the trace; the rest (the client's API key above all)
# stays at the gateway.
REQUEST_HEADERS = frozenset(
    (
        b"content-type",
        b"accept",
        b"inference-header-content-length",
        b"traceparent",
        b"tracestate",
        b"x-request-id",
    )
)
RESPONSE_HEADERS = ("content-type", "inference-header-content-length", "traceparent", "tracestate", "x-request-id")

REQUESTS = Counter(
    "tandem_gateway_requests", "Requests the gateway forwarded, by service and status", ["service", "code"]
)
SECONDS = Histogram("tandem_gateway_seconds", "Time to forward a request and get the answer", ["service"])


class Forwarded(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class ServiceUnavailable(HTTPException):
    """The service cannot answer now: 503, with `Retry-After` in seconds when there is a hint."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(503, message, {"Retry-After": str(retry_after)} if retry_after else None)


def unavailable_reason(status: int, content_type: str, body: bytes) -> str | None:
    """Why an answer says the service is down rather than the request being wrong, or None.

    Dapr's own errors (the call never reached the app, or timed out) carry an `errorCode`; a 502-504 from anything
    but the app means the same. The app's own `{"error": ...}` is its verdict on the request, whatever the status:
    a 4xx, a 500 for one input, a model that is not loaded (503), a pipeline step that timed out (504) or whose
    model failed (502). The service answered, so its other models must stay reachable."""
    answer = None
    if status >= 500 and content_type.startswith("application/json"):
        with suppress(ValueError):
            answer = json.loads(body)
    if isinstance(answer, dict):
        if str(answer.get("errorCode", "")).startswith("ERR_"):
            return f"{answer['errorCode']}: {answer.get('message', '')}"
        if isinstance(answer.get("error"), str):
            return None
    if status in (502, 503, 504):
        return f"it answered {status}: {body[:300].decode(errors='replace')}"
    return None


class Forwarder:
    """The gateway's hot path: pooled connections to its sidecar's invoke API (see `upstream` for why its own
    client)."""

    def __init__(self, sidecar_url: str, api_token: str, timeout: float, max_connections: int = 100):
        self.upstream = Upstream.invoke_api(sidecar_url, api_token, max_connections)
        self.timeout = timeout
        # Prometheus children, labelled once: a lookup by labels takes a lock and builds tuples on every request.
        self.requests: dict[tuple[str, int], Any] = {}
        self.seconds: dict[str, Any] = {}

    async def aclose(self) -> None:
        await self.upstream.aclose()

    def _count(self, service: str, status: int) -> None:
        counter = self.requests.get((service, status))
        if counter is None:
            counter = self.requests[service, status] = REQUESTS.labels(service, str(status))
        counter.inc()

    async def forward(self, service: str, scope: Scope, body: bytes, breaker: CircuitBreaker) -> Forwarded:
        """The service's answer to the request of `scope` with `body`: status, the headers that matter, body; or
        ServiceUnavailable."""
        try:
            answer = await self._forward(service, scope, body, breaker)
        except ServiceUnavailable:
            self._count(service, 503)
            raise
        self._count(service, answer.status)
        return answer

    async def _forward(self, service: str, scope: Scope, body: bytes, breaker: CircuitBreaker) -> Forwarded:
        wait = breaker.wait()
        if wait:
            retry_after = math.ceil(wait)
            raise ServiceUnavailable(
                f"service {service!r} is failing: its circuit breaker is open; the next try goes through in "
                f"{retry_after} s",
                retry_after,
            )
        headers = {}
        for name, value in scope["headers"]:
            if name in REQUEST_HEADERS:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        # Every request gets an id that the service sees and the client gets back, to find it in both sides' logs.
        request_id = headers.setdefault("x-request-id", uuid.uuid4().hex)
        path = f"/{service}/method{quote(scope['path'])}"
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")
        started = time.perf_counter()
        verdict = False
        try:
            try:
                answer = await self.upstream.request(scope["method"], path, headers, body, self.timeout)
            except TimeoutError:
                verdict = True
                breaker.failed()
                raise ServiceUnavailable(f"service {service!r} did not answer within {self.timeout:g} s") from None
            except UpstreamError as error:
                # The gateway's own sidecar is missing: not the service's fault, so the breaker is left alone.
                raise ServiceUnavailable(f"the gateway's Dapr sidecar could not be reached: {error}") from None
            reason = unavailable_reason(answer.status, answer.headers.get("content-type", ""), answer.body)
            verdict = True
            if reason is not None:
                breaker.failed()
                raise ServiceUnavailable(f"service {service!r} is unavailable: {reason}")
            breaker.succeeded()
        finally:
            if not verdict:
                breaker.abandoned()
            histogram = self.seconds.get(service) or self.seconds.setdefault(service, SECONDS.labels(service))
            histogram.observe(time.perf_counter() - started)
        passed = {name: value for name in RESPONSE_HEADERS if (value := answer.headers.get(name)) is not None}
        passed.setdefault("x-request-id", request_id)
        return Forwarded(answer.status, passed, answer.body)
