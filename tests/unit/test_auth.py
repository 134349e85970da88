from fastapi import FastAPI
from fastapi.testclient import TestClient

from tandem.auth import AppTokenMiddleware


def client(token: str) -> TestClient:
    app = FastAPI()
    app.add_middleware(AppTokenMiddleware, token=token)
    app.add_api_route("/v2/models/m", lambda: {"ok": True})
    app.add_api_route("/v2/health/ready", lambda: None)
    return TestClient(app)


def test_calls_without_the_app_token_are_refused_with_a_json_error():
    api = client("s3cret")
    for headers in ({}, {"dapr-api-token": "wrong"}, {"dapr-api-token": ""}):
        response = api.get("/v2/models/m", headers=headers)
        assert response.status_code == 401
        assert "dapr-api-token" in response.json()["error"]


def test_calls_with_the_app_token_pass():
    assert client("s3cret").get("/v2/models/m", headers={"dapr-api-token": "s3cret"}).json() == {"ok": True}


def test_probes_are_open_and_no_token_means_no_check():
    assert client("s3cret").get("/v2/health/ready").status_code == 200
    assert client("").get("/v2/models/m").status_code == 200
