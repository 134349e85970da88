"""The clients ML engineers already use, unmodified: tritonclient and KServe's InferenceRESTClient, against each
service directly and through its sidecar (dapr-app-id header and the invoke path), JSON and binary tensors."""

import asyncio
from pathlib import Path

import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from .cases import CASES, Case, compare, expected
from .stack import Stack

pytestmark = pytest.mark.integration


ROUTES = ["direct", "dapr-app-id header", "invoke path"]


@pytest.fixture(scope="module")
def routes(stack: Stack, model_repository: Path) -> dict[tuple[str, str], tuple[str, dict[str, str]]]:
    """(service, route) -> (base URL without scheme, headers), for the three ways to reach each service."""
    token = {"dapr-api-token": stack.dapr_api_token}
    routes = {}
    for service in sorted({case.service for case in CASES}):
        sidecar, app_port = stack.start_service(service, model_repository)
        routes[service, "direct"] = (f"127.0.0.1:{app_port}", {"dapr-api-token": stack.app_api_token})
        routes[service, "dapr-app-id header"] = (
            f"127.0.0.1:{sidecar.http_port}",
            {**token, "dapr-app-id": sidecar.app_id},
        )
        routes[service, "invoke path"] = (f"127.0.0.1:{sidecar.http_port}/v1.0/invoke/{sidecar.app_id}/method", token)
    return routes


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
