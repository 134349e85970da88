"""Serve your own model, as the README's "Serve your own model" says, step by step, on real sidecars: a scikit-learn
classifier trained here on a dataset scikit-learn bundles, and a Hugging Face-format folder built here from the
packaged MiniLM weights, each made a model folder by `tandem add`, served by `tandem serve` beside its sidecar, found
by the gateway when the server registers, and called with tritonclient and KServe's client directly, through the
sidecar and through the gateway.

Then isolation: a broken card in the same repository leaves the rest serving; killing another service while load
runs through the gateway against these models gives them 0 errors, and the gateway stays ready.

Bad inputs tried: a card with an unknown field (in the served repository); requests to the models of a killed
service; to the route for people, both rows and texts, neither, and texts for a table model.
"""

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tandem.repository import load_version

from ..huggingface_folders import feature_extraction_folder
from .stack import Stack, free_port, wait_until

pytestmark = pytest.mark.integration

KEY = "own-models-key-0123456789"
TANDEM = str(Path(sys.executable).parent / "tandem")
SENTENCES = np.array(["A man is playing a guitar.", "The stock market fell today."], dtype=object)


class Own:
    def __init__(self, work: Path, app_id: str, app_port: int, sidecar_port: int, gateway_port: int):
        self.work = work
        self.app_id = app_id
        self.routes = {
            "direct": (f"127.0.0.1:{app_port}", {}),
            "sidecar": (f"127.0.0.1:{sidecar_port}", {"dapr-app-id": app_id}),
            "gateway": (f"127.0.0.1:{gateway_port}", {"Authorization": f"Bearer {KEY}"}),
        }
        self.gateway = f"http://127.0.0.1:{gateway_port}"


def tandem(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([TANDEM, *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def own(stack: Stack, tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Own:
    work = tmp_path_factory.mktemp("own")
    # 1. Train a model (the user's own code) and save it.
    features, target = load_iris(return_X_y=True, as_frame=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(features, target), work / "iris.joblib")
    feature_extraction_folder(work / "my-minilm")
    # 2. Make model folders of them.
    for artefact, name in (("iris.joblib", "iris"), ("my-minilm", "my-minilm")):
        added = tandem("add", artefact, "--name", name, "--repository", "my-models", cwd=work)
        assert added.returncode == 0, added.stderr
        assert f"curl -s localhost:8080/v2/models/{name}/infer" in added.stdout
    checked = tandem("check", "my-models", cwd=work)
    assert checked.returncode == 0 and "2 model versions, 0 with problems" in checked.stdout, checked.stdout
    # A card with a typo beside them: the others must keep serving.
    broken = work / "my-models" / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.yaml").write_text("name: broken\nversion: 1\ninptus: []\n")

    # 3. Serve the folder beside a sidecar; another service and the gateway run too.
    app_id, app_port, sidecar_port = stack.app_id("my-models"), free_port(), free_port()
    command = [TANDEM, "serve", str(work / "my-models")]
    gateway_app = stack.app_id("gateway")
    env = {"APP_ID": app_id, "DAPR_HTTP_PORT": str(sidecar_port), "TANDEM_GATEWAY_APP": gateway_app}
    stack.start_app("my-models", command, app_port, **env)
    stack.start_sidecar(app_id, stack.components({}), app_port, sidecar_port)
    stack.start_service("regression", model_repository)
    # The gateway is told of regression only: my-models registers itself.
    # No rate limit: the kill test counts every answer under load.
    _, _, gateway_port = stack.start_gateway({"own": KEY}, GATEWAY_REFRESH_SECONDS="600", GATEWAY_RATE_LIMIT="0")
    own = Own(work, app_id, app_port, sidecar_port, gateway_port)

    def listed() -> dict[str, dict]:
        answer = httpx.get(f"{own.gateway}/v2/models", headers={"Authorization": f"Bearer {KEY}"})
        return {entry["name"]: entry for entry in answer.json()["models"]}

    wait_until(lambda: "iris" in listed(), "the gateway listing the registered server's models", timeout=30)
    own.listing = listed()
    return own


def headers_for(own: Own, route: str, stack: Stack) -> tuple[str, dict[str, str]]:
    url, extra = own.routes[route]
    token = {"direct": stack.app_api_token, "sidecar": stack.dapr_api_token, "gateway": None}[route]
    return url, {**extra, **({"dapr-api-token": token} if token else {})}


ROWS = [0, 60, 120]  # one flower of each kind


def iris_rows() -> np.ndarray:
    return load_iris().data[ROWS].astype(np.float32)


def expected_iris(own: Own) -> np.ndarray:
    return joblib.load(own.work / "iris.joblib").predict_proba(load_iris(as_frame=True).data.iloc[ROWS])


def expected_embeddings() -> np.ndarray:
    return load_version(Path(__file__).resolve().parents[2] / "models" / "minilm" / "1").runtime.predict(
        {"text": SENTENCES}
    )["embedding"]


CALLS = {
    "iris": ("input", "FP32", iris_rows, "probabilities", expected_iris),
    "my-minilm": ("text", "BYTES", lambda: SENTENCES, "embedding", lambda own: expected_embeddings()),
}


def test_the_gateway_lists_the_models_of_the_registered_server_and_the_broken_one_with_its_reason(own: Own):
    assert own.listing["iris"]["service"] == own.app_id and own.listing["iris"]["state"] == "READY"
    assert own.listing["my-minilm"]["state"] == "READY"
    broken = own.listing["broken"]
    assert broken["state"] == "UNAVAILABLE" and "inptus: unknown field" in broken["reason"]


@pytest.mark.parametrize("model", CALLS)
@pytest.mark.parametrize("route", ["direct", "sidecar", "gateway"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient(own: Own, stack: Stack, model: str, route: str, binary: bool):
    name, datatype, values, output_name, expected = CALLS[model]
    url, headers = headers_for(own, route, stack)
    client = triton.InferenceServerClient(url=url)
    assert client.is_model_ready(model, headers=dict(headers))
    tensor = triton.InferInput(name, list(values().shape), datatype)
    tensor.set_data_from_numpy(values(), binary_data=binary)
    output = triton.InferRequestedOutput(output_name, binary_data=binary)
    result = client.infer(model, [tensor], outputs=[output], headers=dict(headers))
    np.testing.assert_allclose(result.as_numpy(output_name), expected(own), atol=1e-5)
    assert result.get_response()["model_name"] == model


@pytest.mark.parametrize("model", CALLS)
@pytest.mark.parametrize("route", ["direct", "sidecar", "gateway"])
def test_kserve_client(own: Own, stack: Stack, model: str, route: str):
    name, datatype, values, output_name, expected = CALLS[model]
    url, headers = headers_for(own, route, stack)

    async def infer():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        tensor = InferInput(name, list(values().shape), datatype)
        tensor.set_data_from_numpy(values(), binary_data=False)
        request = InferRequest(model_name=model, infer_inputs=[tensor])
        try:
            return await client.infer(f"http://{url}", request, model_name=model, headers=headers)
        finally:
            await client._client.aclose()

    response = asyncio.run(infer())
    output = next(output for output in response.outputs if output.name == output_name)
    np.testing.assert_allclose(output.as_numpy(), expected(own), atol=1e-5)


def test_killing_another_service_leaves_these_models_answering_and_the_gateway_ready(own: Own, stack: Stack):
    url, headers = headers_for(own, "gateway", stack)
    body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": iris_rows().ravel().tolist()}]}
    answers: list[int] = []
    readiness: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://{url}", headers=headers, timeout=30) as client:
            while not stop.is_set():
                answers.append(client.post("/v2/models/iris/infer", json=body).status_code)
                readiness.append(client.get("/v2/health/ready").status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    regression = next(process for process in stack.processes if process.name == "regression")
    try:
        time.sleep(1)
        regression.stop()
        diabetes = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.01] * 10}]}
        wait_until(
            lambda: (
                httpx.post(f"{own.gateway}/v2/models/diabetes/infer", json=diabetes, headers=headers).status_code == 503
            ),
            "the killed service's model answering 503",
        )
        time.sleep(2)
        status = httpx.get(f"{own.gateway}/status", headers=headers).json()
        assert status["ready"] is True
        assert status["services"][stack.app_id("regression")]["ready"] is False
        assert status["services"][own.app_id]["ready"] is True
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        regression.restart()
    assert answers and set(answers) == {200}, {code: answers.count(code) for code in set(answers)}
    assert readiness and set(readiness) == {200}


def test_the_route_for_people_takes_texts_and_rows(own: Own, stack: Stack):
    url, headers = headers_for(own, "sidecar", stack)
    texts = httpx.post(f"http://{url}/predict/my-minilm", json={"texts": list(SENTENCES)}, headers=headers)
    assert texts.status_code == 200, texts.text
    embeddings = [prediction["embedding"] for prediction in texts.json()["predictions"]]
    np.testing.assert_allclose(embeddings, expected_embeddings(), atol=1e-5)
    names = list(load_iris(as_frame=True).data.columns)
    rows = [dict(zip(names, map(float, row), strict=True)) for row in iris_rows()]
    answer = httpx.post(f"http://{url}/predict/iris", json={"rows": rows}, headers=headers)
    assert answer.status_code == 200, answer.text
    probabilities = [prediction["probabilities"] for prediction in answer.json()["predictions"]]
    np.testing.assert_allclose(probabilities, expected_iris(own), atol=1e-5)
    # Bad inputs: both fields, neither, texts for a table model.
    for body, status in (({"texts": ["a"], "rows": rows}, 422), ({}, 422), ({"texts": ["a"]}, 400)):
        refused = httpx.post(f"http://{url}/predict/iris", json=body, headers=headers)
        assert refused.status_code == status and "error" in refused.json(), refused.text
