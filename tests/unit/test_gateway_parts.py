"""The gateway's parts without a sidecar: circuit breaker, rate limiter, API keys, what counts as a service being
down, and where a client's key is read from."""

import asyncio
from collections.abc import Mapping

import httpx
from starlette.requests import Request

from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.directory import ModelDirectory
from gateway.keys import ApiKeys
from gateway.main import presented_key
from gateway.proxy import unavailable_reason
from gateway.ratelimit import RateLimiter
from tandem.sidecar import Sidecar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_seconds=10, clock=clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # a success in between starts the count again
    breaker.failed()
    breaker.failed()
    assert breaker.state == CLOSED and breaker.wait() == 0
    breaker.failed()
    assert breaker.state == OPEN
    assert breaker.wait() == 10
    clock.now += 10
    assert breaker.state == HALF_OPEN
    assert breaker.wait() == 0  # the trial
    assert breaker.wait() > 0  # nobody else while the trial runs
    breaker.failed()
    assert breaker.state == OPEN  # the trial failed: open again for a full period
    clock.now += 10
    assert breaker.wait() == 0
    breaker.succeeded()
    assert breaker.state == CLOSED and breaker.wait() == 0


def test_an_abandoned_trial_frees_the_slot():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_seconds=1, clock=clock)
    breaker.failed()
    clock.now += 1
    assert breaker.wait() == 0
    breaker.abandoned()
    assert breaker.wait() == 0


def test_rate_limiter_allows_bursts_then_the_rate_per_client():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.retry_after("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") == 0  # every client has its own bucket
    clock.now += 0.5  # one token back at 2/s
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 1
    assert RateLimiter(rate=0, burst=1).retry_after("a") == 0  # off


def test_slow_rate_asks_for_a_longer_wait():
    limiter = RateLimiter(rate=0.1, burst=1, clock=Clock())
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 10


def test_only_unavailability_counts_against_a_service():
    json_type = "application/json"
    dapr_error = b'{"errorCode": "ERR_DIRECT_INVOKE", "message": "connection refused"}'
    assert unavailable_reason(500, json_type, dapr_error) == "ERR_DIRECT_INVOKE: connection refused"
    assert unavailable_reason(503, "text/plain", b"busy")
    assert unavailable_reason(504, "", b"") is not None
    assert unavailable_reason(400, json_type, b'{"error": "wrong shape"}') is None
    assert unavailable_reason(404, json_type, b'{"errorCode": "ERR_X"}') is None
    assert unavailable_reason(500, json_type, b'{"error": "internal error: one input"}') is None
    assert unavailable_reason(500, json_type, b"not json") is None
    # The app's own verdict: a pipeline step that timed out, a model that is not loaded.
    assert unavailable_reason(504, json_type, b'{"error": "step \'s\' timed out"}') is None
    assert unavailable_reason(503, json_type, b'{"error": "model m is not ready"}') is None
    assert unavailable_reason(502, json_type, b'{"detail": "a proxy"}') is not None
    assert unavailable_reason(503, json_type, b"not json") is not None


def test_api_keys_come_from_one_secret_and_survive_a_failed_refresh():
    answers = [
        httpx.Response(200, json={"alice": "k1", "bob": "k2", "empty": ""}),
        httpx.Response(500, json={"errorCode": "ERR_SECRET_GET"}),
    ]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers.pop(0)

    keys = ApiKeys(Sidecar("http://sidecar", transport=httpx.MockTransport(handler)), "secretstore", "api-keys")
    assert keys.client("k1") is None and keys.error
    asyncio.run(keys.refresh())
    assert seen == ["/v1.0/secrets/secretstore/api-keys"]
    assert (keys.client("k1"), keys.client("k2"), keys.client(""), keys.client("k3")) == ("alice", "bob", None, None)
    assert keys.error == ""
    asyncio.run(keys.refresh())
    assert keys.client("k1") == "alice"
    assert "could not read secret 'api-keys'" in keys.error


def test_a_model_asked_for_during_an_index_read_waits_for_that_read():
    """The periodic read is under way when the first request for a model comes: the request must get the model's
    owner from that read, not a 404 because a read started less than a second ago."""

    async def scenario() -> tuple[str | None, int]:
        release = asyncio.Event()
        reads = []

        async def handler(request: httpx.Request) -> httpx.Response:
            reads.append(request.url.path)
            await release.wait()
            return httpx.Response(200, json=[{"name": "diabetes", "version": "1", "state": "READY"}])

        sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(handler))
        directory = ModelDirectory(sidecar, ["regression"], timeout=1)
        periodic = asyncio.create_task(directory.refresh())
        await asyncio.sleep(0)
        asked = asyncio.create_task(directory.owner("diabetes"))
        await asyncio.sleep(0.05)
        release.set()
        await periodic
        return await asked, len(reads)

    owner, reads = asyncio.run(scenario())
    assert owner == "regression"
    assert reads == 1  # the request waited for the read under way rather than starting another


def request_with_headers(headers: dict[str, str]) -> Mapping[str, str]:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw}).headers


def test_the_key_comes_from_bearer_or_x_api_key():
    assert presented_key(request_with_headers({"Authorization": "Bearer abc"})) == "abc"
    assert presented_key(request_with_headers({"Authorization": "bearer  abc "})) == "abc"
    assert presented_key(request_with_headers({"X-API-Key": "xyz"})) == "xyz"
    assert presented_key(request_with_headers({"Authorization": "Basic abc"})) is None
    assert presented_key(request_with_headers({"Authorization": "Bearer "})) is None
    assert presented_key(request_with_headers({})) is None
