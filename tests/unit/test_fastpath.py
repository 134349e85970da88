"""The infer route as plain ASGI, in the regression app in-process: it keeps every guard of the kit's other routes.

Bad inputs tried: no app token, a wrong one, a body over the limit (declared and streamed without a length), the
wrong method, a broken binary header length, a model that breaks while running.
"""

import json
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient

from regression.main import RegressionSettings
from tandem.server import make_app
from tandem.settings import DaprSettings

ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}).encode()
TOKEN = {"dapr-api-token": "s3cret"}
LIMIT = 4096


@pytest.fixture(scope="module")
def client(model_repository):
    settings = RegressionSettings(
        model_repository=model_repository, models=["diabetes"], max_body_bytes=LIMIT, gateway_app=""
    )
    app = make_app("regression", settings, DaprSettings(app_api_token="s3cret"))
    # The app's own 500 handler answers; the exception is not raised into the test.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_infer_needs_the_app_token(client):
    for headers in ({}, {"dapr-api-token": "wrong"}):
        response = client.post("/v2/models/diabetes/infer", content=BODY, headers=headers)
        assert response.status_code == 401
        assert "dapr-api-token" in response.json()["error"]
    response = client.post("/v2/models/diabetes/versions/1/infer", content=BODY, headers=TOKEN)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["model_version"] == "1"


def test_a_body_over_the_limit_is_413_declared_or_streamed(client):
    response = client.post("/v2/models/diabetes/infer", content=b" " * (LIMIT + 1), headers=TOKEN)
    assert response.status_code == 413
    assert f"request body of {LIMIT + 1} bytes is over the limit of {LIMIT}" in response.json()["error"]

    def chunks():  # sent without Content-Length: the limit is counted as the body arrives
        for _ in range(LIMIT // 512 + 2):
            yield b" " * 512

    response = client.post("/v2/models/diabetes/infer", content=chunks(), headers=TOKEN)
    assert response.status_code == 413
    assert f"request body is over the limit of {LIMIT} bytes" in response.json()["error"]
    assert client.post("/v2/models/diabetes/infer", content=BODY, headers=TOKEN).status_code == 200


def test_a_body_in_many_chunks_is_read_whole(client):
    response = client.post(
        "/v2/models/diabetes/infer", content=(BODY[i : i + 7] for i in range(0, len(BODY), 7)), headers=TOKEN
    )
    assert response.status_code == 200


def test_other_methods_on_the_infer_path_are_405(client):
    response = client.get("/v2/models/diabetes/infer", headers=TOKEN)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": "Method Not Allowed"}


def test_binary_tensors_in_and_out(client):
    header = json.dumps(
        {
            "inputs": [{"name": "input", "shape": [2, 10], "datatype": "FP32", "parameters": {"binary_data_size": 80}}],
            "outputs": [{"name": "variable", "parameters": {"binary_data": True}}],
        }
    ).encode()
    rows = np.array([ROW, ROW], dtype=np.float32)
    headers = {**TOKEN, "content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    response = client.post("/v2/models/diabetes/infer", content=header + rows.tobytes(), headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 8}
    values = struct.unpack("<2f", response.content[length:])
    assert values[0] == values[1]

    headers["inference-header-content-length"] = "nope"
    response = client.post("/v2/models/diabetes/infer", content=header + rows.tobytes(), headers=headers)
    assert response.status_code == 400
    assert "Inference-Header-Content-Length 'nope'" in response.json()["error"]


def test_a_model_that_breaks_gets_the_apps_500_answer_and_the_service_stays_up(client, monkeypatch):
    model = client.app.state.dataplane.repository.get("diabetes")

    def broken(inputs, outputs):
        raise RuntimeError("the graph fell over")

    monkeypatch.setattr(model.runner, "run", broken)
    response = client.post("/v2/models/diabetes/infer", content=BODY, headers=TOKEN)
    assert response.status_code == 500
    assert "error" in response.json()
    monkeypatch.undo()
    assert client.post("/v2/models/diabetes/infer", content=BODY, headers=TOKEN).status_code == 200


def test_openapi_documents_both_infer_paths(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"):
        operation = paths[path]["post"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/InferenceResponse"
        }
