"""The clients ML engineers already use, unmodified: tritonclient and KServe's InferenceRESTClient, against each
service directly and through its sidecar (dapr-app-id header and the invoke path), JSON and binary tensors."""

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tandem.runtime import runtime_class

from .stack import Stack

pytestmark = pytest.mark.integration


def digit_png(digit: int) -> bytes:
    image = np.full((80, 60), 255, np.uint8)
    cv2.putText(image, str(digit), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 2.2, 0, 5)
    return cv2.imencode(".png", image)[1].tobytes()


@dataclass
class Case:
    """One model of one service, with an input and the output to compare."""

    service: str
    model: str
    input: str
    datatype: str
    values: np.ndarray
    output: str

    def tensor_values(self, binary: bool) -> np.ndarray:
        if self.datatype == "BYTES" and not binary and isinstance(self.values[0], bytes):
            # JSON carries BYTES as strings: binary content such as an image goes base64-encoded.
            return np.array([base64.b64encode(value).decode() for value in self.values], dtype=object)
        return self.values


CASES = [
    Case(
        "regression",
        "diabetes",
        "input",
        "FP32",
        np.array(
            [
                [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
                [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
            ],
            dtype=np.float32,
        ),
        "variable",
    ),
    Case(
        "nlp", "minilm", "text", "BYTES", np.array(["A man plays a guitar.", "Stocks fell."], dtype=object), "embedding"
    ),
    Case("vision", "digits", "image", "BYTES", np.array([digit_png(3), digit_png(8)], dtype=object), "label"),
]
ROUTES = ["direct", "dapr-app-id header", "invoke path"]


@pytest.fixture(scope="module")
def routes(stack: Stack, model_repository: Path) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    """(service, route) -> (base URL without scheme, headers), for the three ways to reach each service."""
    token = {"dapr-api-token": stack.dapr_api_token}
    routes = {}
    for service in sorted({case.service for case in CASES}):
        sidecar, app_port = stack.start_service(service, model_repository)
        routes[service, "direct"] = (f"127.0.0.1:{app_port}", {"dapr-api-token": stack.app_api_token})
        routes[service, "dapr-app-id header"] = (f"127.0.0.1:{sidecar.http_port}", {**token, "dapr-app-id": service})
        routes[service, "invoke path"] = (f"127.0.0.1:{sidecar.http_port}/v1.0/invoke/{service}/method", token)
    return routes


def expected(case: Case, model_repository: Path) -> np.ndarray:
    """What the model gives in-process, without HTTP or Dapr."""
    folder = model_repository / case.model / "1"
    card = yaml.safe_load((folder / "model.yaml").read_text())
    return runtime_class(card)(folder, card).predict({case.input: case.values}, [case.output])[case.output]


def compare(got: np.ndarray, want: np.ndarray) -> None:
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got.reshape(want.shape), want)


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient(routes, model_repository, case: Case, route: str, binary: bool):
    url, shared_headers = routes[case.service, route]
    headers = dict(shared_headers)  # tritonclient adds its own headers to the dict it is given
    client = triton.InferenceServerClient(url=url)
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready(case.model, headers=headers)
    metadata = client.get_model_metadata(case.model, headers=headers)
    assert metadata["inputs"][0]["name"] == case.input

    tensor = triton.InferInput(case.input, list(case.values.shape), case.datatype)
    tensor.set_data_from_numpy(case.tensor_values(binary), binary_data=binary)
    output = triton.InferRequestedOutput(case.output, binary_data=binary)
    result = client.infer(case.model, [tensor], outputs=[output], headers=headers, request_id="r-1")
    compare(result.as_numpy(case.output), expected(case, model_repository))
    assert result.get_response()["id"] == "r-1"

    with pytest.raises(triton.InferenceServerException) as refused:
        client.infer("nope", [tensor], headers=headers)
    assert refused.value.status() == "404"
    assert "not served here" in refused.value.message()


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_client(routes, model_repository, case: Case, route: str, binary: bool):
    url, headers = routes[case.service, route]

    async def infer():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        tensor = InferInput(case.input, list(case.values.shape), case.datatype)
        tensor.set_data_from_numpy(case.tensor_values(binary), binary_data=binary)
        request = InferRequest(model_name=case.model, infer_inputs=[tensor], request_id="k-1")
        try:
            return await client.infer(f"http://{url}", request, model_name=case.model, headers=dict(headers))
        finally:
            await client._client.aclose()

    response = asyncio.run(infer())
    assert response.model_name == case.model
    output = next(output for output in response.outputs if output.name == case.output)
    compare(output.as_numpy(), expected(case, model_repository))
