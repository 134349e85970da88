"""The regression app in-process (no sidecar): OIP routes, and every bad input we could think of."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from regression.main import EXAMPLE, RegressionSettings
from tandem.people import people_router
from tandem.server import make_app

ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]


def request(data=None, shape=(1, 10), datatype="FP32", **extra):
    tensor = {
        "name": "input",
        "shape": list(shape),
        "datatype": datatype,
        "data": ROW if data is None else data,
    }
    return {"inputs": [tensor], **extra}


@pytest.fixture(scope="module")
def client(model_repository):
    settings = RegressionSettings(model_repository=model_repository, max_body_bytes=64 * 1024, gateway_app="")
    app = make_app("regression", settings, routers=(people_router(settings, EXAMPLE),))
    with TestClient(app) as client:
        yield client


def test_health_answers_200_with_an_empty_body(client):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/diabetes/ready",
        "/v2/models/diabetes/versions/1/ready",
    ):
        response = client.get(path)
        assert (response.status_code, response.content) == (200, b"")


def test_server_and_model_metadata(client):
    assert client.get("/v2").json()["name"] == "regression"
    metadata = client.get("/v2/models/diabetes").json()
    assert metadata == client.get("/v2/models/diabetes/versions/1").json()
    assert metadata["versions"] == ["1"]
    assert metadata["outputs"] == [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}]


def test_infer_matches_onnxruntime_and_echoes_the_request_id(client, model_repository):
    response = client.post("/v2/models/diabetes/infer", json=request(id="req-7"))
    assert response.status_code == 200
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("diabetes", "1", "req-7")
    session = ort.InferenceSession(str(model_repository / "diabetes" / "1" / "model.onnx"))
    expected = session.run(None, {"input": np.asarray([ROW], dtype=np.float32)})[0]
    np.testing.assert_array_equal(np.asarray(body["outputs"][0]["data"], dtype=np.float32), expected.ravel())


def test_json_without_a_content_type_header_works(client):
    response = client.post("/v2/models/diabetes/infer", content=json.dumps(request()).encode())
    assert response.status_code == 200


BAD_REQUESTS = [
    ("not JSON", b"{", 400, "not valid JSON"),
    ("empty body", b"", 400, "not valid JSON"),
    ("inputs not a list", {"inputs": 1}, 422, "at 'inputs'"),
    ("wrong shape", request(ROW[:9], (1, 9)), 400, "must have shape [-1, 10]"),
    ("shape and data disagree", request(ROW, (2, 10)), 400, "needs 20 values, data has 10"),
    ("wrong datatype", request(datatype="FP64"), 400, "must be FP32"),
    ("unknown datatype", request(datatype="FLOAT"), 400, "unknown datatype"),
    ("text in numbers", request(ROW[:9] + ["x"]), 400, "data is not FP32"),
    (
        "NaN",
        b'{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[NaN,0,0,0,0,0,0,0,0,0]}]}',
        400,
        "NaN",
    ),
    (
        "infinity",
        b'{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[Infinity,0,0,0,0,0,0,0,0,0]}]}',
        400,
        "NaN or infinity",
    ),
    ("too large for FP32", request(ROW[:9] + [1e39]), 400, "data is not FP32: a value overflows it"),
    ("wrong input name", {"inputs": [{**request()["inputs"][0], "name": "x"}]}, 400, "missing ['input']"),
    ("input twice", {"inputs": request()["inputs"] * 2}, 400, "given twice"),
    ("unknown output", request(outputs=[{"name": "nope"}]), 400, "unknown outputs ['nope']"),
]


@pytest.mark.parametrize(("case", "body", "status", "message"), BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx_and_the_service_stays_ready(client, case, body, status, message):
    payload = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = client.post("/v2/models/diabetes/infer", **payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/nope/infer", 404, "model 'nope' is not served here"),
        ("/v2/models/diabetes/versions/2/infer", 404, "no version '2'"),
        ("/v2/models/..diabetes/infer", 400, "not a valid name"),
        ("/v2/models/diabetes/versions/..%2F1/infer", 404, "Not Found"),
    ],
)
def test_unknown_or_malicious_model_paths(client, path, status, message):
    response = client.post(path, json=request())
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_body_over_the_limit_is_413(client):
    response = client.post("/v2/models/diabetes/infer", content=b" " * (64 * 1024 + 1))
    assert response.status_code == 413
    assert "over the limit" in response.json()["error"]


def test_metrics_count_inferences(client):
    client.post("/v2/models/diabetes/infer", json=request())
    metrics = client.get("/metrics").text
    assert 'tandem_inference_requests_total{model="diabetes",outcome="ok",version="1"}' in metrics


def test_openapi_documents_the_inference_request(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/InferenceRequest"
    assert "RequestInput" in schema["components"]["schemas"]


def inference_count(client, model: str, outcome: str) -> float:
    """tandem_inference_requests_total for the model and outcome (0 before the first)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "tandem_inference_requests_total" and sample.labels["model"] == model:
                if sample.labels["outcome"] == outcome:
                    return sample.value
    return 0.0


def test_every_inference_is_counted_the_route_for_people_and_refusals_too(client):
    row = dict(zip(["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"], ROW, strict=True))
    before = {outcome: inference_count(client, "diabetes", outcome) for outcome in ("ok", "bad_request")}
    unknown_before = inference_count(client, "", "not_found")
    assert client.post("/predict/diabetes", json={"rows": [row]}).status_code == 200
    assert client.post("/v2/models/diabetes/infer", json=request()).status_code == 200
    assert client.post("/v2/models/diabetes/infer", json=request(shape=(1, 3), data=ROW[:3])).status_code == 400
    assert client.post("/predict/nope", json={"rows": [row]}).status_code == 404
    assert client.post("/v2/models/nope/infer", json=request()).status_code == 404
    assert inference_count(client, "diabetes", "ok") == before["ok"] + 2
    assert inference_count(client, "diabetes", "bad_request") == before["bad_request"] + 1
    # Names no model has are counted under model="", so a client cannot mint metric series.
    assert inference_count(client, "", "not_found") == unknown_before + 2
