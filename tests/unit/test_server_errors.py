"""5xx answers of any Tandem app: what failed and a request id, never the error's own text, which goes to the log.

Failures tried: an unexpected exception in a route, the sidecar answering an error, the sidecar unreachable; a caller's
own x-request-id (kept) and one that is not a plain token (replaced).
"""

import httpx
import jsonschema
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from tandem.server import make_base_app
from tandem.settings import AppSettings, DaprSettings
from tandem.sidecar import SidecarError

SECRET = "redis://:hunter2@10.0.0.7:6379"

router = APIRouter()


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError(f"could not talk to {SECRET}")


@router.get("/sidecar-error")
async def sidecar_error() -> None:
    raise SidecarError(500, f'{{"message": "{SECRET} refused"}}', "get state statestore/k")


@router.get("/sidecar-unreachable")
async def sidecar_unreachable() -> None:
    raise httpx.ConnectError(f"connection to {SECRET} refused")


@router.get("/typed")
async def typed(count: int) -> dict:
    return {"count": count}


@pytest.fixture(scope="module")
def client():
    app = make_base_app("test", AppSettings(), DaprSettings(app_api_token=""), routers=(router,))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/boom", 500, "internal error"),
        ("/sidecar-error", 502, "get state statestore/k: the Dapr sidecar answered 500"),
        ("/sidecar-unreachable", 503, "the Dapr sidecar could not be reached (ConnectError)"),
    ],
)
def test_a_5xx_names_what_failed_and_a_request_id_and_logs_the_error_under_it(client, caplog, path, status, message):
    response = client.get(path)
    assert response.status_code == status
    request_id = response.headers["x-request-id"]
    assert response.json() == {"error": f"{message} (request id {request_id})"}
    assert SECRET not in response.text
    logged = [record for record in caplog.records if request_id in record.getMessage()]
    assert len(logged) == 1 and SECRET in str(logged[0].exc_info[1])


def test_the_callers_request_id_is_kept_unless_it_is_not_a_plain_token(client):
    assert client.get("/boom", headers={"x-request-id": "abc-123.x_y"}).headers["x-request-id"] == "abc-123.x_y"
    for sent in ("two words", "a\\nforged log line", "x" * 65):
        returned = client.get("/boom", headers={"x-request-id": sent}).headers["x-request-id"]
        assert returned != sent and len(returned) == 32


def test_the_openapi_documents_the_error_shape_that_every_route_answers(client):
    """FastAPI documents 422 as {"detail": [...]}; the kit answers {"error": "..."}, with any 4xx or 5xx."""
    schema = client.get("/openapi.json").json()
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
            error = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}
    refused = client.get("/typed", params={"count": "many"})
    assert refused.status_code == 422
    jsonschema.validate(refused.json(), schema["components"]["schemas"]["Error"])
    assert "count" in refused.json()["error"]
