"""The gateway in front of real model services, every call through real sidecars: tritonclient against models of
all three services, API keys from a Dapr secret store, rate limits, unknown models, a killed service (503, the
breaker opening, the gateway staying ready, recovery), model changes announced over pub/sub, and sidecars closed to callers without the token.

Bad inputs tried: no key, a wrong key (both headers), a key in the wrong scheme, an unknown model, a burst over the
rate limit, requests to a killed service, calls to a model service's sidecar and app without their tokens."""

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from .cases import CASES, compare, expected
from .stack import Stack, wait_until

pytestmark = pytest.mark.integration

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-9876543210", "flood": "flood-key-5555555555"}
RATE_LIMIT, RATE_BURST = 20, 20
BREAKER_FAILURES, BREAKER_OPEN_SECONDS = 3, 5


class Gateway:
    def __init__(self, url: str, services: dict[str, tuple[str, int]]):
        self.url = url
        self.services = services  # app id -> (sidecar URL, app port)

    def get(self, path: str, key: str = KEYS["alice"], **kwargs) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)

    def post(self, path: str, body: bytes, key: str = KEYS["alice"], headers: dict[str, str] | None = None):
        headers = {"Authorization": f"Bearer {key}", **(headers or {})}
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def gateway(stack: Stack, model_repository: Path) -> Gateway:
    services = {}
    for service in ("vision", "nlp", "regression"):
        sidecar, app_port = stack.start_service(service, model_repository)
        services[service] = (sidecar.url, app_port)
    _, _, app_port = stack.start_gateway(
        KEYS,
        GATEWAY_RATE_LIMIT=str(RATE_LIMIT),
        GATEWAY_RATE_BURST=str(RATE_BURST),
        GATEWAY_BREAKER_FAILURES=str(BREAKER_FAILURES),
        GATEWAY_BREAKER_OPEN_SECONDS=str(BREAKER_OPEN_SECONDS),
        # Longer than the tests: model changes must reach the gateway through pub/sub, not a periodic refresh.
        GATEWAY_REFRESH_SECONDS="600",
    )
    return Gateway(f"http://127.0.0.1:{app_port}", services)


def test_lists_the_models_of_every_service(gateway: Gateway, stack: Stack):
    # Ready means every index was read or tried once; one that timed out on a busy machine is read again soon.
    def listing() -> list[dict]:
        return gateway.get("/v2/models").json()["models"]

    wait_until(lambda: {entry["service"] for entry in listing()} == set(stack.services.values()), "every index read")
    models = listing()
    owners = {entry["name"]: entry["service"] for entry in models}
    vision, nlp, regression = (stack.app_id(service) for service in ("vision", "nlp", "regression"))
    assert owners["digits"] == vision and owners["ocr"] == vision
    assert owners["minilm"] == nlp and owners["sentiment"] == nlp
    assert owners["diabetes"] == regression and owners["maintenance-rul"] == regression
    assert all(entry["state"] == "READY" for entry in models)
    index = gateway.post("/v2/repository/index", b'{"ready": true}').json()
    assert {entry["name"] for entry in index} == set(owners)


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_through_the_gateway(gateway: Gateway, model_repository: Path, case, binary: bool):
    client = triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    auth = {"X-API-Key": KEYS["bob"]}
    assert client.is_server_ready(headers=dict(auth))
    assert client.is_model_ready(case.model, headers=dict(auth))
    assert client.get_model_metadata(case.model, headers=dict(auth))["inputs"][0]["name"] == case.input

    tensor = triton.InferInput(case.input, list(case.values.shape), case.datatype)
    tensor.set_data_from_numpy(case.tensor_values(binary), binary_data=binary)
    output = triton.InferRequestedOutput(case.output, binary_data=binary)
    result = client.infer(case.model, [tensor], outputs=[output], headers=dict(auth), request_id="g-1")
    compare(result.as_numpy(case.output), expected(case, model_repository))
    assert result.get_response()["id"] == "g-1"
    # A version in the path reaches the same model.
    versioned = client.infer(case.model, [tensor], model_version="1", outputs=[output], headers=dict(auth))
    compare(versioned.as_numpy(case.output), expected(case, model_repository))


def test_trace_and_request_ids_pass_both_ways(gateway: Gateway):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.01] * 10}]})
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "x-request-id": "req-42"}
    response = gateway.post("/v2/models/diabetes/infer", body.encode(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-42"
    # The sidecars continue the client's trace: same trace id, their own span.
    assert response.headers["traceparent"].split("-")[1] == trace_id


def test_refuses_requests_without_a_known_key(gateway: Gateway):
    no_key = httpx.get(f"{gateway.url}/v2/models")
    assert no_key.status_code == 401 and "missing API key" in no_key.json()["error"]
    assert no_key.headers["www-authenticate"] == "Bearer"
    wrong_bearer = gateway.get("/v2/models", key="not-a-key")
    assert wrong_bearer.status_code == 401 and wrong_bearer.json()["error"] == "unknown API key"
    wrong_header = httpx.get(f"{gateway.url}/v2/models/diabetes", headers={"X-API-Key": "alice-key"})
    assert wrong_header.status_code == 401
    wrong_scheme = httpx.get(f"{gateway.url}/v2/models", headers={"Authorization": f"Basic {KEYS['alice']}"})
    assert wrong_scheme.status_code == 401
    infer = httpx.post(f"{gateway.url}/v2/models/diabetes/infer", content=b"{}")
    assert infer.status_code == 401
    # Probes stay open.
    assert httpx.get(f"{gateway.url}/v2/health/live").status_code == 200


def test_rate_limit_per_key(gateway: Gateway):
    async def burst() -> list[httpx.Response]:
        # All at once: one after another, a slow machine could take longer than the bucket needs to refill.
        headers = {"Authorization": f"Bearer {KEYS['flood']}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60) as client:
            return await asyncio.gather(*(client.get("/v2/models/diabetes") for _ in range(RATE_BURST * 3)))

    answers = asyncio.run(burst())
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused, "a burst of three times the limit was never refused"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert "rate limit" in refused[0].json()["error"]
    # Another client's budget is its own.
    assert gateway.get("/v2/models/diabetes", key=KEYS["alice"]).status_code == 200
    time.sleep(int(refused[-1].headers["retry-after"]))
    assert gateway.get("/v2/models/diabetes", key=KEYS["flood"]).status_code == 200


def test_unknown_model_is_404(gateway: Gateway):
    response = gateway.post("/v2/models/nope/infer", b"{}")
    assert response.status_code == 404
    assert "'nope' is not served by any service" in response.json()["error"]
    # A model's own errors come back as the service gave them.
    bad = gateway.post("/v2/models/diabetes/infer", b'{"inputs": [{"name": "input", "shape": [1, 3]}]}')
    assert bad.status_code in (400, 422) and "error" in bad.json()


def test_status_shows_each_service(gateway: Gateway, stack: Stack):
    status = gateway.get("/status").json()
    assert status["ready"] is True
    assert set(status["services"]) == set(stack.services.values())
    regression = status["services"][stack.app_id("regression")]
    assert regression["ready"] and regression["breaker"] == "closed"
    assert "diabetes" in {model["name"] for model in regression["models"]}


def test_model_changes_reach_the_gateway_over_pubsub(gateway: Gateway, stack: Stack):
    sidecar_url, _ = gateway.services["regression"]
    token = {"dapr-api-token": stack.dapr_api_token}

    def state_of(model: str) -> str:
        models = gateway.get("/v2/models").json()["models"]
        return next(entry["state"] for entry in models if entry["name"] == model)

    unload = httpx.post(
        f"{sidecar_url}/v1.0/invoke/{stack.app_id('regression')}/method/v2/repository/models/clusters/unload",
        headers=token,
    )
    assert unload.status_code == 200, unload.text
    wait_until(lambda: state_of("clusters") == "UNAVAILABLE", "the gateway seeing clusters unloaded", timeout=20)
    load = httpx.post(
        f"{sidecar_url}/v1.0/invoke/{stack.app_id('regression')}/method/v2/repository/models/clusters/load",
        headers=token,
    )
    assert load.status_code == 200, load.text
    wait_until(lambda: state_of("clusters") == "READY", "the gateway seeing clusters loaded", timeout=20)


def test_sidecars_and_apps_refuse_callers_without_their_tokens(gateway: Gateway, stack: Stack):
    sidecar_url, app_port = gateway.services["regression"]
    body = b'{"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0,0,0,0,0,0,0,0,0,0]}]}'
    path = f"/v1.0/invoke/{stack.app_id('regression')}/method/v2/models/diabetes/infer"
    assert httpx.post(f"{sidecar_url}{path}", content=body).status_code == 401
    assert httpx.post(f"{sidecar_url}{path}", content=body, headers={"dapr-api-token": "wrong"}).status_code == 401
    assert httpx.post(f"http://127.0.0.1:{app_port}/v2/models/diabetes/infer", content=body).status_code == 401
    assert httpx.post(f"{sidecar_url}{path}", content=body, headers={"dapr-api-token": stack.dapr_api_token}).is_success


def test_killed_service_gives_503_then_the_breaker_opens_and_closes_on_recovery(gateway: Gateway, stack: Stack):
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.02] * 10}]})
    assert gateway.post("/v2/models/diabetes/infer", body.encode()).status_code == 200
    process = next(process for process in stack.processes if process.name == "regression")
    process.stop()

    down = [gateway.post("/v2/models/diabetes/infer", body.encode()) for _ in range(BREAKER_FAILURES)]
    assert [answer.status_code for answer in down] == [503] * BREAKER_FAILURES, [answer.text for answer in down]
    assert f"service '{stack.app_id('regression')}' is unavailable" in down[0].json()["error"]
    open_breaker = gateway.post("/v2/models/diabetes/infer", body.encode())
    assert open_breaker.status_code == 503 and "circuit breaker is open" in open_breaker.json()["error"]
    assert int(open_breaker.headers["retry-after"]) >= 1
    assert gateway.get("/status").json()["services"][stack.app_id("regression")]["breaker"] == "open"
    # The gateway stays ready (a Kubernetes probe must not take it, and every other service, out of the load
    # balancer); /status says which service is down.
    assert httpx.get(f"{gateway.url}/v2/health/ready").status_code == 200
    status = gateway.get("/status").json()
    assert status["ready"] is True and status["services"][stack.app_id("regression")]["ready"] is False
    # Other services are not affected.
    assert gateway.get("/v2/models/minilm/ready").status_code == 200

    process.restart()
    wait_until(
        lambda: gateway.post("/v2/models/diabetes/infer", body.encode()).status_code == 200,
        "the gateway reaching the restarted regression service",
        timeout=60,
        process=process,
    )
    assert gateway.get("/status").json()["services"][stack.app_id("regression")]["breaker"] == "closed"
    answer = gateway.post("/v2/models/diabetes/infer", body.encode()).json()
    assert np.isfinite(answer["outputs"][0]["data"][0])
