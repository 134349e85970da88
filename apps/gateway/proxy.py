"""Forwards a client's request, as it came, to the service that owns the model, through the gateway's sidecar."""

import json
import math
import time
import uuid
from contextlib import suppress

import aiohttp
from fastapi import Request, Response
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException

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
    """The gateway's hot path: one pooled aiohttp session to its sidecar's invoke API.

    aiohttp rather than the kit's httpx client: a call through it costs about a quarter of the CPU (0.25 vs 1.1 ms
    per call on the machine bench/gateway.py ran on), and the gateway makes one per client request."""

    def __init__(self, sidecar_url: str, api_token: str, timeout: float, max_connections: int = 100):
        self.base = f"{sidecar_url.rstrip('/')}/v1.0/invoke"
        self.timeout = timeout
        self.session = aiohttp.ClientSession(
            headers={"dapr-api-token": api_token} if api_token else None,
            connector=aiohttp.TCPConnector(limit=max_connections),
            timeout=aiohttp.ClientTimeout(total=timeout),
            auto_decompress=False,
        )

    async def aclose(self) -> None:
        await self.session.close()

    async def forward(self, service: str, request: Request, breaker: CircuitBreaker) -> Response:
        """The service's answer (status, body, the headers that matter), or ServiceUnavailable."""
        try:
            response = await self._forward(service, request, breaker)
        except ServiceUnavailable:
            REQUESTS.labels(service, "503").inc()
            raise
        REQUESTS.labels(service, str(response.status_code)).inc()
        return response

    async def _forward(self, service: str, request: Request, breaker: CircuitBreaker) -> Response:
        wait = breaker.wait()
        if wait:
            retry_after = math.ceil(wait)
            raise ServiceUnavailable(
                f"service {service!r} is failing: its circuit breaker is open; the next try goes through in "
                f"{retry_after} s",
                retry_after,
            )
        body = await request.body()
        headers = {name: value for name in REQUEST_HEADERS if (value := request.headers.get(name)) is not None}
        # Every request gets an id that the service sees and the client gets back, to find it in both sides' logs.
        headers.setdefault("x-request-id", uuid.uuid4().hex)
        url = f"{self.base}/{service}/method{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
        started = time.perf_counter()
        verdict = False
        try:
            try:
                async with self.session.request(request.method, url, data=body, headers=headers) as answer:
                    content = await answer.read()
                    status, answer_headers = answer.status, answer.headers
            except TimeoutError:
                verdict = True
                breaker.failed()
                raise ServiceUnavailable(f"service {service!r} did not answer within {self.timeout:g} s") from None
            except aiohttp.ClientError as error:
                # The gateway's own sidecar is missing: not the service's fault, so the breaker is left alone.
                raise ServiceUnavailable(
                    f"the gateway's Dapr sidecar could not be reached: {type(error).__name__}"
                ) from None
            reason = unavailable_reason(status, answer_headers.get("content-type", ""), content)
            verdict = True
            if reason is not None:
                breaker.failed()
                raise ServiceUnavailable(f"service {service!r} is unavailable: {reason}")
            breaker.succeeded()
        finally:
            if not verdict:
                breaker.abandoned()
            SECONDS.labels(service).observe(time.perf_counter() - started)
        passed = {name: value for name in RESPONSE_HEADERS if (value := answer_headers.get(name)) is not None}
        passed.setdefault("x-request-id", headers["x-request-id"])
        return Response(content, status_code=status, headers=passed)
