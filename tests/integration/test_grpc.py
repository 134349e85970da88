"""The Open Inference Protocol over gRPC, with the clients ML engineers already use, unmodified: tritonclient.grpc and
KServe's InferenceGRPCClient against a model of every service (regression, nlp, vision) directly, through the
service's gRPC sidecar (app channel gRPC, `dapr-app-id` metadata), through its other sidecar (which proxies to the
gRPC one) and through the gateway (API key in metadata, routing by model name); answers equal to the in-process
model's. Then bad input, built message by message, gets INVALID_ARGUMENT or NOT_FOUND with a message, and every
service stays ready."""

import json
import secrets
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from tandem.grpc_protocol import SERVICE, message

from .cases import CASES, Case, compare, expected
from .stack import Stack

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
ROUTES = ["direct", "its gRPC sidecar", "its other sidecar", "gateway"]
API_KEY = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def routes(stack: Stack, model_repository: Path) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    """(service, route) -> (host:port, metadata), for the four ways to reach each service over gRPC."""
    token = {"dapr-api-token": stack.dapr_api_token}
    routes = {}
    for service in sorted({case.service for case in CASES}):
        sidecar, _ = stack.start_service(service, model_repository, grpc=True)
        grpc_app = stack.grpc_sidecars[service]
        routes[service, "direct"] = (f"127.0.0.1:{stack.grpc_ports[service]}", {"dapr-api-token": stack.app_api_token})
        routes[service, "its gRPC sidecar"] = (
            f"127.0.0.1:{grpc_app.grpc_port}",
            {**token, "dapr-app-id": grpc_app.app_id},
        )
        routes[service, "its other sidecar"] = (
            f"127.0.0.1:{sidecar.grpc_port}",
            {**token, "dapr-app-id": grpc_app.app_id},
        )
    stack.start_gateway({"tester": API_KEY})
    for service in {service for service, _ in routes}:
        routes[service, "gateway"] = (f"127.0.0.1:{stack.gateway_grpc_port}", {"authorization": f"Bearer {API_KEY}"})
    return routes


def run_clients(client: str, url: str, metadata: dict[str, str], calls: list[dict], work: Path) -> list[dict]:
    plan, answers = work / f"plan-{secrets.token_hex(4)}.json", work / f"answers-{secrets.token_hex(4)}.json"
    plan.write_text(json.dumps({"client": client, "url": url, "metadata": metadata, "calls": calls}))
    subprocess.run([sys.executable, str(HERE / "grpc_clients.py"), str(plan), str(answers)], check=True, timeout=120)
    return json.loads(answers.read_text())


def inputs_file(case: Case, work: Path) -> str:
    target = work / f"{case.model}-{secrets.token_hex(4)}.npz"
    np.savez(target, **{case.input: case.values})
    return str(target)


def text(array: np.ndarray) -> np.ndarray:
    """BYTES outputs as text, as the client process saved them."""
    if array.dtype.kind in "OS":
        return np.array([item.decode() if isinstance(item, bytes) else item for item in array.flat]).reshape(
            array.shape
        )
    return array


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
@pytest.mark.parametrize("route", ROUTES)
def test_tritonclient_grpc(routes, model_repository, tmp_path, case: Case, route: str):
    url, metadata = routes[case.service, route]
    calls = [
        {"call": "server_live"},
        {"call": "server_ready"},
        {"call": "model_ready", "model": case.model},
        {"call": "model_metadata", "model": case.model},
        {"call": "infer", "model": case.model, "inputs": inputs_file(case, tmp_path), "id": "t-1"},
        {"call": "infer", "model": case.model, "version": "1", "inputs": inputs_file(case, tmp_path), "id": "t-2"},
        {"call": "infer", "model": "nope", "inputs": inputs_file(case, tmp_path), "id": "t-3"},
    ]
    live, ready, model_ready, metadata_answer, *inferred, unknown = run_clients(
        "triton", url, metadata, calls, tmp_path
    )
    assert live == ready == model_ready == {"ok": True}
    assert metadata_answer["ok"]["inputs"][0]["name"] == case.input
    want = text(expected(case, model_repository))
    for answer, request_id in zip(inferred, ["t-1", "t-2"], strict=True):
        assert answer["ok"]["id"] == request_id and answer["ok"]["version"] == "1"
        compare(np.load(answer["ok"]["answer"])[case.output], want)
    assert unknown["code"] == "NOT_FOUND"
    assert "'nope'" in unknown["message"]


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
@pytest.mark.parametrize("route", ROUTES)
def test_kserve_grpc_client(routes, model_repository, tmp_path, case: Case, route: str):
    """Typed contents (the client's default) and raw_input_contents (binary_data); an image goes raw both times
    (the client encodes typed BYTES contents from text only)."""
    url, metadata = routes[case.service, route]
    typed_possible = not isinstance(case.values.flat[0], bytes)
    calls = [
        {"call": "server_live"},
        {"call": "server_ready"},
        {"call": "model_ready", "model": case.model},
        {
            "call": "infer",
            "model": case.model,
            "inputs": inputs_file(case, tmp_path),
            "raw": not typed_possible,
            "id": "k-1",
        },
        {"call": "infer", "model": case.model, "inputs": inputs_file(case, tmp_path), "raw": True, "id": "k-2"},
    ]
    live, ready, model_ready, *inferred = run_clients("kserve", url, metadata, calls, tmp_path)
    assert live == ready == model_ready == {"ok": True}
    want = text(expected(case, model_repository))
    for answer, request_id in zip(inferred, ["k-1", "k-2"], strict=True):
        assert answer["ok"]["id"] == request_id
        compare(np.load(answer["ok"]["answer"])[case.output], want)


def test_the_repository_extension_over_grpc(routes, tmp_path):
    """tritonclient's repository index, then unload and load of a model, on the regression service through its
    gRPC sidecar; then the gateway's index across services."""
    url, metadata = routes["regression", "its gRPC sidecar"]
    calls = [
        {"call": "index"},
        {"call": "unload", "model": "diabetes-trees"},
        {"call": "model_ready", "model": "diabetes-trees"},
        {"call": "load", "model": "diabetes-trees"},
        {"call": "model_ready", "model": "diabetes-trees"},
    ]
    index, unloaded, after_unload, loaded, after_load = run_clients("triton", url, metadata, calls, tmp_path)
    entries = {entry["name"]: entry for entry in index["ok"]["models"]}
    assert entries["diabetes"]["state"] == "READY" and entries["diabetes"]["version"] == "1"
    assert unloaded == loaded == {"ok": None}
    assert after_unload["code"] == "NOT_FOUND"
    assert after_load == {"ok": True}

    # The gateway's index: every service's models.
    url, metadata = routes["regression", "gateway"]
    (across,) = run_clients("triton", url, metadata, [{"call": "index"}], tmp_path)
    states = {entry["name"]: entry["state"] for entry in across["ok"]["models"]}
    assert {case.model for case in CASES} <= {name for name, state in states.items() if state == "READY"}


def call(url: str, method: str, request, metadata: dict[str, str]):
    """One call of the protocol with a message built here (not by a client, which would refuse to send it)."""
    response_type = message(f"{method}Response")
    with grpc.insecure_channel(url) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda value: value.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        return stub(request, metadata=list(metadata.items()), timeout=30)


BAD_INPUTS = {
    # what is wrong -> (the request, the status code, a part of the message)
    "unknown model": (
        lambda: message("ModelInferRequest")(model_name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "model 'nope' is not served",
    ),
    "unknown version": (
        lambda: message("ModelInferRequest")(model_name="diabetes", model_version="7"),
        grpc.StatusCode.NOT_FOUND,
        "no version '7'",
    ),
    "wrong shape": (
        lambda: _raw_request(shape=[1, 3], data=np.zeros((1, 3), np.float32).tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must have shape [-1, 10]",
    ),
    "raw contents of the wrong size": (
        lambda: _raw_request(shape=[1, 10], data=b"\0" * 12),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 40 bytes, got 12",
    ),
    "more raw contents than inputs": (
        lambda: _raw_request(shape=[1, 10], data=b"\0" * 40, extra=(b"\0" * 40,)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents has 2 entries for 1 inputs",
    ),
    "typed contents of the wrong count": (
        lambda: _typed_request("FP32", fp32_contents=[0.1] * 9),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 10 values, fp32_contents has 9",
    ),
    "wrong datatype": (
        lambda: _typed_request("INT64", int64_contents=[1] * 10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'input'",
    ),
    "INT8 out of range": (
        lambda: _typed_request("INT8", int_contents=[300] * 10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "values outside [-128, 127]",
    ),
    "FP16 as typed contents": (
        lambda: _typed_request("FP16"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FP16 has no typed contents",
    ),
    "unknown datatype": (
        lambda: _typed_request("FP8"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown datatype 'FP8'",
    ),
    "unknown output": (
        lambda: _raw_request(shape=[1, 10], data=b"\0" * 40, outputs=("nope",)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "nope",
    ),
}


def _raw_request(shape: list[int], data: bytes, extra: tuple[bytes, ...] = (), outputs: tuple[str, ...] = ()) -> object:
    request = message("ModelInferRequest")(model_name="diabetes")
    request.inputs.add(name="input", datatype="FP32", shape=shape)
    request.raw_input_contents.extend([data, *extra])
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _typed_request(datatype: str, **contents: list) -> object:
    request = message("ModelInferRequest")(model_name="diabetes")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=[1, 10])
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize("route", ["direct", "its gRPC sidecar", "gateway"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gets_a_status_code_with_a_message(routes, route: str, bad: str):
    """Tried: an unknown model, an unknown version, a wrong shape, raw contents of the wrong size, more raw contents
    than inputs, typed contents of the wrong count, a wrong datatype, INT8 values out of range, FP16 as typed contents,
    an unknown datatype, an unknown output. Then the service is still ready."""
    url, metadata = routes["regression", route]
    build, code, text_part = BAD_INPUTS[bad]
    with pytest.raises(grpc.RpcError) as refused:
        call(url, "ModelInfer", build(), metadata)
    assert refused.value.code() == code, refused.value.details()
    assert text_part in refused.value.details()
    assert call(url, "ServerReady", message("ServerReadyRequest")(), metadata).ready


def test_calls_without_the_token_or_key_are_refused(routes):
    """The app without the app token, a sidecar without the Dapr API token, the gateway without a key and with a
    wrong one: UNAUTHENTICATED (the sidecar's own refusal for its token)."""
    request = _raw_request(shape=[1, 10], data=b"\0" * 40)
    for route, metadata in [
        ("direct", {}),
        ("gateway", {}),
        ("gateway", {"authorization": "Bearer wrong"}),
        ("its gRPC sidecar", {"dapr-app-id": routes["regression", "its gRPC sidecar"][1]["dapr-app-id"]}),
    ]:
        url, _ = routes["regression", route]
        with pytest.raises(grpc.RpcError) as refused:
            call(url, "ModelInfer", request, metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (route, refused.value.details())
        assert refused.value.details()


def test_health_for_kubernetes_and_dapr(routes):
    """Kubernetes' gRPC probes (grpc.health.v1) and Dapr's gRPC app health check get the service's readiness,
    without the app token."""
    url, _ = routes["regression", "direct"]
    with grpc.insecure_channel(url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=10) == b"\x08\x01"  # SERVING
        assert check(b"\n\x04live", timeout=10) == b"\x08\x01"
        dapr_health = channel.unary_unary("/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck")
        assert dapr_health(b"", timeout=10) == b""
