"""The clients ML engineers already use, unmodified: tritonclient and KServe's InferenceRESTClient,
against a service directly and through its sidecar (dapr-app-id header and the invoke path), JSON and binary."""

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from .stack import Stack

pytestmark = pytest.mark.integration

ROWS = np.array(
    [
        [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
        [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
    ],
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def routes(stack: Stack, model_repository: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """The three ways to reach the regression service: name -> (base URL without scheme, headers)."""
    sidecar, app_port = stack.start_service("regression", model_repository)
    token = {"dapr-api-token": stack.dapr_api_token}
    return {
        "direct": (f"127.0.0.1:{app_port}", {"dapr-api-token": stack.app_api_token}),
        "dapr-app-id header": (f"127.0.0.1:{sidecar.http_port}", {**token, "dapr-app-id": "regression"}),
        "invoke path": (f"127.0.0.1:{sidecar.http_port}/v1.0/invoke/regression/method", token),
    }


@pytest.fixture(scope="module")
def expected(model_repository: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model_repository / "diabetes" / "1" / "model.onnx"))
    return session.run(None, {"input": ROWS})[0]


ROUTES = ["direct", "dapr-app-id header", "invoke path"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient(routes, expected, route, binary):
    url, shared_headers = routes[route]
    headers = dict(shared_headers)  # tritonclient adds its own headers to the dict it is given
    client = triton.InferenceServerClient(url=url)
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready("diabetes", headers=headers)
    metadata = client.get_model_metadata("diabetes", headers=headers)
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]

    tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    output = triton.InferRequestedOutput("variable", binary_data=binary)
    result = client.infer("diabetes", [tensor], outputs=[output], headers=headers, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("variable"), expected)
    assert result.get_response()["id"] == "r-1"

    with pytest.raises(triton.InferenceServerException) as refused:
        client.infer("nope", [tensor], headers=headers)
    assert refused.value.status() == "404"
    assert "not served here" in refused.value.message()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_client(routes, expected, route, binary):
    url, headers = routes[route]

    async def infer():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        tensor = InferInput("input", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS, binary_data=binary)
        request = InferRequest(model_name="diabetes", infer_inputs=[tensor], request_id="k-1")
        try:
            return await client.infer(f"http://{url}", request, model_name="diabetes", headers=dict(headers))
        finally:
            await client._client.aclose()

    response = asyncio.run(infer())
    assert response.model_name == "diabetes"
    np.testing.assert_array_equal(response.outputs[0].as_numpy().reshape(expected.shape), expected)
