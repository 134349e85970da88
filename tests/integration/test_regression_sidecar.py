"""The regression service behind a real daprd: inference through the sidecar and API tokens both ways."""

import json
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from .stack import Sidecar, Stack

pytestmark = pytest.mark.integration

ROWS = [
    [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
    [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
]
INFER = {"inputs": [{"name": "input", "shape": [2, 10], "datatype": "FP32", "data": ROWS}]}


@pytest.fixture(scope="module")
def service(stack: Stack, model_repository: Path) -> tuple[Sidecar, int]:
    return stack.start_service("regression", model_repository)


def onnx_prediction(model_repository: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model_repository / "diabetes" / "1" / "model.onnx"))
    return session.run(None, {"input": np.asarray(ROWS, dtype=np.float32)})[0]


def test_infer_through_the_invoke_path_equals_the_onnx_model(service, stack: Stack, model_repository: Path):
    sidecar, _ = service
    response = httpx.post(
        f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method/v2/models/diabetes/infer",
        json=INFER,
        headers={"dapr-api-token": stack.dapr_api_token},
    )
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    assert (output["name"], output["shape"], output["datatype"]) == ("variable", [2, 1], "FP32")
    expected = onnx_prediction(model_repository)
    np.testing.assert_array_equal(np.asarray(output["data"], dtype=np.float32).reshape(2, 1), expected)


def test_infer_through_the_dapr_app_id_header(service, stack: Stack, model_repository: Path):
    sidecar, _ = service
    response = httpx.post(
        f"{sidecar.url}/v2/models/diabetes/infer",
        content=json.dumps(INFER),  # JSON without a Content-Type header
        headers={"dapr-api-token": stack.dapr_api_token, "dapr-app-id": sidecar.app_id},
    )
    assert response.status_code == 200, response.text
    data = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 1)
    np.testing.assert_array_equal(data, onnx_prediction(model_repository))


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_the_sidecar_refuses_api_calls_without_its_token(service, token: str | None):
    sidecar, _ = service
    headers = {"dapr-api-token": token} if token else {}
    url = f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method/v2/models/diabetes/infer"
    assert httpx.post(url, json=INFER, headers=headers).status_code == 401
    assert httpx.get(f"{sidecar.url}/v1.0/metadata", headers=headers).status_code == 401


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_the_app_refuses_calls_that_bypass_its_sidecar(service, token: str | None):
    _, app_port = service
    headers = {"dapr-api-token": token} if token else {}
    response = httpx.post(f"http://127.0.0.1:{app_port}/v2/models/diabetes/infer", json=INFER, headers=headers)
    assert response.status_code == 401
    assert "dapr-api-token" in response.json()["error"]
    # Probes stay open: kubelet and the sidecar's health check must reach them.
    assert httpx.get(f"http://127.0.0.1:{app_port}/v2/health/ready").status_code == 200


def test_the_app_accepts_its_sidecars_token(service, stack: Stack):
    _, app_port = service
    response = httpx.get(
        f"http://127.0.0.1:{app_port}/v2/models/diabetes", headers={"dapr-api-token": stack.app_api_token}
    )
    assert response.status_code == 200
    assert response.json()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("v2/models/nope/infer", INFER, 404, "model 'nope' is not served here"),
        ("v2/models/diabetes/versions/9/infer", INFER, 404, "has no version '9'"),
        (
            "v2/models/diabetes/infer",
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            400,
            "must have shape [-1, 10]",
        ),
    ],
)
def test_errors_reach_the_caller_through_the_sidecar(service, stack: Stack, path, body, status, message):
    sidecar, _ = service
    response = httpx.post(
        f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method/{path}",
        json=body,
        headers={"dapr-api-token": stack.dapr_api_token},
    )
    assert response.status_code == status
    assert message in response.json()["error"]
    ready = httpx.get(
        f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method/v2/health/ready",
        headers={"dapr-api-token": stack.dapr_api_token},
    )
    assert ready.status_code == 200
