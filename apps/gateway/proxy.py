"""Forwards a client's request, as it came, to the service that owns the model, through the gateway's sidecar."""

import math
import time
import uuid

import httpx
from fastapi import Request, Response
from prometheus_client import Counter, Histogram

from tandem.sidecar import Sidecar

from .breaker import CircuitBreaker

# What the model service needs to read the body and join the trace; the rest (the client's API key above all)
# stays at the gateway.
REQUEST_HEADERS = (
    "content-type",
    "accept",
    "inference-header-content-length",
    "traceparent",
    "tracestate",
    "x-request-id",
)
RESPONSE_HEADERS = ("content-type", "inference-header-content-length", "traceparent", "tracestate", "x-request-id")

REQUESTS = Counter(
    "tandem_gateway_requests", "Requests the gateway forwarded, by service and status", ["service", "code"]
)
SECONDS = Histogram("tandem_gateway_seconds", "Time to forward a request and get the answer", ["service"])


class ServiceUnavailable(Exception):
    """The service cannot answer now; `retry_after` is a hint in seconds, when there is one."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def unavailable_reason(response: httpx.Response) -> str | None:
    """Why an answer says the service is down rather than the request being wrong, or None.

    Dapr's own errors (the call never reached the app, or timed out) carry an `errorCode`; 502-504 from anyone
    mean the same. An app's 4xx, and an app's 500 for one input, say nothing about the service's health."""
    if response.status_code in (502, 503, 504):
        return f"it answered {response.status_code}: {response.text[:300]}"
    if response.status_code >= 500 and response.headers.get("content-type", "").startswith("application/json"):
        try:
            body = response.json()
        except ValueError:
            return None
        if isinstance(body, dict) and str(body.get("errorCode", "")).startswith("ERR_"):
            return f"{body['errorCode']}: {body.get('message', '')}"
    return None


async def forward(
    sidecar: Sidecar, service: str, request: Request, breaker: CircuitBreaker, timeout: float
) -> Response:
    """The service's answer (status, body, the headers that matter), or ServiceUnavailable."""
    try:
        response = await _forward(sidecar, service, request, breaker, timeout)
    except ServiceUnavailable:
        REQUESTS.labels(service, "503").inc()
        raise
    REQUESTS.labels(service, str(response.status_code)).inc()
    return response


async def _forward(
    sidecar: Sidecar, service: str, request: Request, breaker: CircuitBreaker, timeout: float
) -> Response:
    wait = breaker.wait()
    if wait:
        retry_after = math.ceil(wait)
        raise ServiceUnavailable(
            f"service {service!r} is failing: its circuit breaker is open; the next try goes through in {retry_after} s",
            retry_after,
        )
    body = await request.body()
    headers = {name: value for name in REQUEST_HEADERS if (value := request.headers.get(name)) is not None}
    # Every request gets an id that the service sees and the client gets back, to find it in both sides' logs.
    headers.setdefault("x-request-id", uuid.uuid4().hex)
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    started = time.perf_counter()
    verdict = False
    try:
        try:
            response = await sidecar.invoke(
                service, path, http_method=request.method, content=body, headers=headers, timeout=timeout
            )
        except httpx.TimeoutException:
            verdict = True
            breaker.failed()
            raise ServiceUnavailable(f"service {service!r} did not answer within {timeout:g} s") from None
        except httpx.TransportError as error:
            # The gateway's own sidecar is missing: not the service's fault, so the breaker is left alone.
            raise ServiceUnavailable(
                f"the gateway's Dapr sidecar could not be reached: {type(error).__name__}"
            ) from None
        reason = unavailable_reason(response)
        verdict = True
        if reason is not None:
            breaker.failed()
            raise ServiceUnavailable(f"service {service!r} is unavailable: {reason}")
        breaker.succeeded()
    finally:
        if not verdict:
            breaker.abandoned()
        SECONDS.labels(service).observe(time.perf_counter() - started)
    answer_headers = {name: value for name in RESPONSE_HEADERS if (value := response.headers.get(name)) is not None}
    answer_headers.setdefault("x-request-id", headers["x-request-id"])
    return Response(response.content, status_code=response.status_code, headers=answer_headers)
