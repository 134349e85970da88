"""Pipelines served like models, on real sidecars, models and Redis: the reference pipelines (ensemble, document
triage) through the gateway with tritonclient give exactly what calling their models one by one gives; mapping
errors refused at load; a failing step under each onError; a step over its timeout; run records and metrics.

Bad inputs tried: a pipeline whose mapping cannot work (refused at load, 503 naming step and tensor), a missing
input, an input of the wrong datatype, an unknown requested output, a step given too few labels (the model's 400)
under onError fail, skip and default, a step that cannot answer within its timeout (504), an unknown run id."""

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from .spans import SpanCollector
from .stack import ROOT, Sidecar, Stack, wait_until

pytestmark = pytest.mark.integration

KEY = "pipelines-key-0123456789"
HERE = Path(__file__).resolve().parent
ROWS = np.array(
    [
        [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
        [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
    ],
    dtype=np.float32,
)
LABELS = np.array(["delivery", "billing", "product quality"], dtype=object)
COMPLAINT = ["The parcel arrived late and broken.", "I want my money back."]
PRAISE = ["Great quality, highly recommended.", "I love it."]


def page(lines: list[str]) -> bytes:
    image = np.full((60 + 60 * len(lines), 900), 255, np.uint8)
    for row, line in enumerate(lines):
        cv2.putText(image, line, (20, 70 + 60 * row), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 0, 2)
    return cv2.imencode(".png", image)[1].tobytes()


class Deployment:
    def __init__(
        self, stack: Stack, gateway_url: str, pipelines: Sidecar, services: dict[str, str], spans: SpanCollector
    ):
        self.stack = stack
        self.spans = spans
        self.gateway_url = gateway_url
        self.pipelines = pipelines
        self.services = services  # service -> its unique app id in this test

    def triton(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(url=self.gateway_url.removeprefix("http://"), network_timeout=120)

    def model_call(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One model through the gateway, as a client would call it."""
        tensors = []
        for name, array in inputs.items():
            tensor = triton.InferInput(name, list(array.shape), "BYTES" if array.dtype.kind == "O" else "FP32")
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        result = self.triton().infer(model, tensors, headers={"X-API-Key": KEY})
        return {output["name"]: result.as_numpy(output["name"]) for output in result.get_response()["outputs"]}

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.gateway_url}{path}", json=body, headers={"X-API-Key": KEY}, timeout=120)

    def pipelines_get(self, path: str) -> httpx.Response:
        headers = {"dapr-api-token": self.stack.dapr_api_token}
        return httpx.get(f"{self.pipelines.url}/v1.0/invoke/{self.pipelines.app_id}/method/{path}", headers=headers)


@pytest.fixture(scope="module")
def deployment(stack: Stack, model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    spans = SpanCollector()
    stack.trace_to(spans.endpoint)
    services = {}
    for service in ("vision", "nlp", "regression"):
        stack.start_service(service, model_repository)
        services[service] = stack.app_id(service)
    folder = tmp_path_factory.mktemp("pipelines")
    for source in [*(ROOT / "pipelines").glob("*.yaml"), *(HERE / "pipelines").glob("*.yaml")]:
        shutil.copy(source, folder)
    pipelines_id = stack.app_id("pipelines")
    sidecar, _ = stack.start_app_beside_sidecar(
        "pipelines",
        stack.components({}),
        pipelines_id,
        PIPELINES_FOLDER=str(folder),
        PIPELINES_SERVICES=",".join(services.values()),
    )
    _, _, gateway_port = stack.start_gateway(
        {"tests": KEY}, GATEWAY_SERVICES=",".join([*services.values(), pipelines_id])
    )
    deployment = Deployment(stack, f"http://127.0.0.1:{gateway_port}", sidecar, services, spans)
    wait_until(
        lambda: deployment.pipelines_get("v2/models/triage/ready").status_code == 200,
        "the triage pipeline compiled",
        timeout=60,
    )
    # Through the gateway too, once it has indexed the pipelines app and the ensemble's models are ready: the first
    # test asked too early once.
    wait_until(
        lambda: deployment.triton().is_model_ready("ensemble", headers={"X-API-Key": KEY}),
        "the ensemble ready through the gateway",
        timeout=60,
    )
    yield deployment
    spans.close()


def onnx_prediction(model_repository: Path, model: str, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_repository / model / "1" / "model.onnx"))
    return session.run(None, {"input": rows})[0]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_the_ensemble_answers_tritonclient_through_the_gateway(deployment, model_repository: Path, binary: bool):
    client = deployment.triton()
    auth = {"X-API-Key": KEY}
    assert client.is_model_ready("ensemble", headers=dict(auth))
    metadata = client.get_model_metadata("ensemble", headers=dict(auth))
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert {"name": "prediction", "datatype": "FP32", "shape": [-1, 1]} in metadata["outputs"]

    tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("prediction", "ridge", "trees")]
    result = client.infer("ensemble", [tensor], outputs=outputs, headers=dict(auth), request_id="e-1")
    ridge = onnx_prediction(model_repository, "diabetes", ROWS)
    trees = onnx_prediction(model_repository, "diabetes-trees", ROWS)
    np.testing.assert_allclose(result.as_numpy("ridge"), ridge, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("trees"), trees, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("prediction"), (ridge + trees) / 2, rtol=1e-6)
    response = result.get_response()
    assert response["id"] == "e-1"
    assert response["parameters"]["steps_ran"] == "ridge,trees"
    assert response["parameters"]["steps_failed"] == ""


def test_a_run_joins_the_callers_trace(deployment):
    """Each step's model call is a span under the pipeline's, in the trace of the client that called the gateway."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"X-API-Key": KEY, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    body = {"inputs": [{"name": "input", "shape": [2, 10], "datatype": "FP32", "data": ROWS.ravel().tolist()}]}
    answer = httpx.post(f"{deployment.gateway_url}/v2/models/ensemble/infer", json=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["traceparent"].split("-")[1] == trace_id
    # Each sidecar exports its spans (in batches, every few seconds): the gateway's call of the pipeline, the
    # pipeline's span, each step's model call under it and the model's own span, all in the caller's trace.
    pipelines, regression = deployment.pipelines.app_id, deployment.services["regression"]
    step_calls = {f"calllocal/{regression}/v2/models/{model}/infer" for model in ("diabetes", "diabetes-trees")}

    def spans() -> dict[tuple[str, str], dict]:
        return {(span["localEndpoint"]["serviceName"], span["name"]): span for span in deployment.spans.trace(trace_id)}

    run = f"calllocal/{pipelines}/v2/models/ensemble/infer"
    gateway = deployment.stack.app_id("gateway")
    wanted = {
        (gateway, run),
        (pipelines, run),
        *((side, name) for side in (pipelines, regression) for name in step_calls),
    }
    try:
        wait_until(lambda: wanted <= spans().keys(), "every span exported", 30)
    except TimeoutError:
        every = [
            (span["localEndpoint"]["serviceName"], span["name"], span.get("traceId")) for span in deployment.spans.spans
        ]
        raise AssertionError(f"missing {wanted - spans().keys()}; every span collected: {every}") from None
    by_name = spans()
    gateway_call = by_name[(gateway, run)]
    assert gateway_call["parentId"] == "00f067aa0ba902b7"  # the caller's span
    assert by_name[(pipelines, run)]["parentId"] == gateway_call["id"]
    for name in step_calls:
        step = by_name[(pipelines, name)]
        assert step["kind"] == "CLIENT" and step["parentId"] == by_name[(pipelines, run)]["id"]
        assert by_name[(regression, name)]["parentId"] == step["id"]


def gateway_index(deployment) -> dict[str, dict]:
    """The gateway's repository index by name, once it lists the pipelines compiled against their models: the
    gateway is ready when each index was read or tried once (one that timed out on a busy machine is read again a
    second later), and a pipeline whose models could not be reached yet is compiled again a little later."""

    def index() -> dict[str, dict]:
        answer = httpx.post(f"{deployment.gateway_url}/v2/repository/index", json={}, headers={"X-API-Key": KEY})
        return {entry["name"]: entry for entry in answer.json()}

    def compiled() -> bool:
        entries = index()
        return (
            entries.get("ensemble", {}).get("state") == "READY"
            and "step 'trees'" in entries.get("broken", {}).get("reason", "")
            and "diabetes" in entries
        )

    wait_until(compiled, "the gateway listing the pipelines, compiled", timeout=60)
    return index()


def test_the_gateway_lists_the_pipelines_beside_the_models(deployment):
    entries = gateway_index(deployment)
    assert entries["ensemble"]["state"] == "READY" and entries["ensemble"]["service"].startswith("pipelines-")
    assert entries["diabetes"]["state"] == "READY"
    models = httpx.get(f"{deployment.gateway_url}/v2/models", headers={"X-API-Key": KEY}).json()["models"]
    listed = {entry["name"]: entry for entry in models}
    # Pipelines and models alike with their tensors, as their metadata gives them.
    assert listed["ensemble"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert {"name": "prediction", "datatype": "FP32", "shape": [-1, 1]} in listed["ensemble"]["outputs"]
    assert listed["diabetes"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert "inputs" not in listed["broken"] and "step 'trees'" in listed["broken"]["reason"]


def triage_by_hand(deployment: Deployment, image: bytes) -> dict[str, np.ndarray]:
    """The triage pipeline's work, one model call at a time."""
    ocr = deployment.model_call("ocr", {"image": np.array([image], dtype=object)})
    lines = [line["text"] for line in json.loads(ocr["lines"][0])]
    sentiments = [deployment.model_call("sentiment", {"text": np.array([line], dtype=object)}) for line in lines]
    topics = [
        deployment.model_call("zero-shot", {"text": np.array([line], dtype=object), "labels": LABELS}) for line in lines
    ]
    expected = {
        "text": ocr["text"],
        "sentiment": np.concatenate([result["label"] for result in sentiments]),
        "sentiment_probabilities": np.concatenate([result["probabilities"] for result in sentiments]),
        "topics": np.concatenate([result["label"] for result in topics]),
        "topic_scores": np.concatenate([result["scores"] for result in topics]),
    }
    if any(label == b"negative" for label in expected["sentiment"]):
        complaint = deployment.model_call("zero-shot", {"text": ocr["text"], "labels": LABELS})
        expected["complaint_topic"] = complaint["label"]
    return expected


@pytest.mark.parametrize("lines", [COMPLAINT, PRAISE], ids=["complaint", "praise"])
def test_triage_fans_out_over_the_lines_and_its_condition_decides_like_the_models_one_by_one(deployment, lines):
    image = page(lines)
    expected = triage_by_hand(deployment, image)
    assert len(expected["sentiment"]) >= len(lines)
    client = deployment.triton()
    inputs = []
    for name, array in (("image", np.array([image], dtype=object)), ("labels", LABELS)):
        tensor = triton.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    result = client.infer("triage", inputs, headers={"X-API-Key": KEY})
    parameters = result.get_response()["parameters"]
    for name, want in expected.items():
        got = result.as_numpy(name)
        if want.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        else:
            assert got.tolist() == want.tolist(), name
    # The condition decides as the models one by one do: the complaint page has a line read as negative, the
    # praise page none.
    if lines is COMPLAINT:
        assert "complaint_topic" in expected and parameters["steps_skipped"] == ""
    else:
        assert b"negative" not in expected["sentiment"].tolist()
        assert result.as_numpy("complaint_topic") is None
        assert parameters["steps_skipped"] == "complaint"

    run = deployment.pipelines_get(f"v2/pipelines/triage/runs/{parameters['pipeline_run']}").json()
    assert run["status"] == "ok"
    assert run["steps"]["sentiment"]["inputs"] == {"items": len(expected["sentiment"])}
    assert run["steps"]["ocr"]["outputs"]["text"]["data"] == [expected["text"][0].decode()]
    assert run["steps"]["complaint"]["status"] == ("ok" if lines is COMPLAINT else "skipped")


def test_a_pipeline_whose_mapping_cannot_work_is_refused_at_load(deployment):
    broken = gateway_index(deployment)["broken"]
    assert broken["state"] == "UNAVAILABLE"
    assert "step 'trees' (model diabetes-trees) input 'input': 'ridge.variable' is FP32 [-1, 1]" in broken["reason"]
    answer = deployment.post(
        "/v2/models/broken/infer",
        {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}]},
    )
    assert answer.status_code == 503 and "step 'trees'" in answer.json()["error"]


def ensemble_request(**change) -> dict:
    tensor = {"name": "input", "shape": [2, 10], "datatype": "FP32", "data": ROWS.ravel().tolist(), **change}
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": []}, "missing ['input']"),
        (ensemble_request(datatype="FP64"), "must be FP32"),
        ({**ensemble_request(), "outputs": [{"name": "nothing"}]}, "no outputs ['nothing']"),
    ],
)
def test_bad_requests_get_a_400_naming_what_is_wrong(deployment, body, message):
    answer = deployment.post("/v2/models/ensemble/infer", body)
    assert answer.status_code == 400 and message in answer.json()["error"]


def labels_request(labels: list[str]) -> dict:
    return {
        "inputs": [
            ensemble_request()["inputs"][0],
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["The parcel arrived late."]},
            {"name": "labels", "shape": [len(labels)], "datatype": "BYTES", "data": labels},
        ]
    }


def test_a_failing_step_under_each_on_error(deployment, model_repository: Path):
    """The zero-shot step given one label fails (the model's 400): fail -> the run's 400 naming the step; skip ->
    200 without its outputs; default -> 200 with the default values; and with good labels all three answer alike."""
    ridge = onnx_prediction(model_repository, "diabetes", ROWS)

    failed = deployment.post("/v2/models/labels-fail/infer", labels_request(["delivery"]))
    assert failed.status_code == 400
    assert (
        "step 'topic' (model zero-shot) failed" in failed.json()["error"]
        and "2 or more labels" in failed.json()["error"]
    )

    skipped = deployment.post("/v2/models/labels-skip/infer", labels_request(["delivery"]))
    assert skipped.status_code == 200, skipped.text
    outputs = {output["name"]: output for output in skipped.json()["outputs"]}
    assert set(outputs) == {"ridge"}
    np.testing.assert_allclose(np.array(outputs["ridge"]["data"]).reshape(ridge.shape), ridge, rtol=1e-6)
    assert skipped.json()["parameters"]["steps_failed"] == "topic"

    defaulted = deployment.post("/v2/models/labels-default/infer", labels_request(["delivery"]))
    assert defaulted.status_code == 200, defaulted.text
    outputs = {output["name"]: output for output in defaulted.json()["outputs"]}
    assert outputs["topic"]["data"] == ["unknown"] and outputs["scores"]["data"] == [0.5, 0.5]
    assert defaulted.json()["parameters"]["steps_defaulted"] == "topic"

    good = ["delivery", "billing"]
    answers = [
        deployment.post(f"/v2/models/labels-{mode}/infer", labels_request(good)) for mode in ("fail", "skip", "default")
    ]
    assert all(answer.status_code == 200 for answer in answers)
    assert len({json.dumps(answer.json()["outputs"]) for answer in answers}) == 1


def test_a_step_over_its_timeout_fails_the_run_with_504(deployment):
    """Through the gateway, which passes the pipeline's own 504 on: a step timing out is the run's failure, not the
    pipelines service being down, so however often it happens the service's other pipelines stay reachable."""
    image = page(COMPLAINT)
    body = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]}]
    }
    breaker_failures = 5  # the gateway's default
    for _ in range(breaker_failures + 1):
        answer = deployment.post("/v2/models/slow-ocr/infer", body)
        assert answer.status_code == 504, answer.text
    error = answer.json()["error"]
    assert "step 'ocr' (model ocr) failed: no answer" in error and "within 0.005 s" in error
    run_id = answer.json()["error"].split(" run ")[1].split(":")[0]
    run = deployment.pipelines_get(f"v2/pipelines/slow-ocr/runs/{run_id}").json()
    assert run["status"] == "failed" and run["steps"]["ocr"]["status"] == "failed"
    assert deployment.post("/v2/models/ensemble/infer", ensemble_request()).status_code == 200
    status = httpx.get(f"{deployment.gateway_url}/status", headers={"X-API-Key": KEY}).json()
    assert status["services"][deployment.pipelines.app_id]["breaker"] == "closed"


def test_unknown_runs_are_404(deployment):
    answer = deployment.pipelines_get("v2/pipelines/ensemble/runs/no-such-run")
    assert answer.status_code == 404 and "no run 'no-such-run'" in answer.json()["error"]


def test_step_times_are_in_the_metrics(deployment):
    deployment.post("/v2/models/ensemble/infer", ensemble_request())
    metrics = deployment.pipelines_get("metrics").text
    assert 'tandem_pipeline_step_seconds_count{outcome="ok",pipeline="ensemble",step="ridge"}' in metrics
    assert 'outcome="failed",pipeline="slow-ocr",step="ocr"' in metrics
