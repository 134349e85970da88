"""Search ingest (pipelines/search-ingest.yaml) on real sidecars, models, Redis, placement and the scheduler: each
event on `documents` is one durable run (OCR, then minilm, then the search index); afterwards the nlp service's
search finds each page by meaning, and by its own text with score 1 (the kept embedding is minilm's of the text OCR
read); a redelivered event runs once; the same pipeline answers tritonclient through the gateway, in-request; a
durable run's workflow is purged once it has been kept `PIPELINES_RUNS_SECONDS`.

Bad inputs tried: an event naming a collection that is no valid name (the index step's 400 fails the run, nothing
is indexed)."""

import base64
import json
import secrets
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from .durable import DurableDeployment, pipelines_folder
from .stack import Stack, wait_until
from .test_pipelines import page

pytestmark = pytest.mark.integration

KEY = "search-ingest-key-0123456789"
KEPT_SECONDS = 30  # runs kept, then purged; long enough for a redelivered event to find its run
PAGES = {
    "final": ["The striker scored twice in the final."],
    "rates": ["The central bank raised interest rates."],
}


@pytest.fixture(scope="module")
def deployment(stack: Stack, model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> DurableDeployment:
    folder = pipelines_folder(tmp_path_factory.mktemp("pipelines"), "search-ingest")
    deployment = DurableDeployment(stack, model_repository, folder, others=("vision", "nlp"))
    deployment.start_replica(PIPELINES_RUNS_SECONDS=str(KEPT_SECONDS))
    deployment.wait_ready("search-ingest")
    return deployment


def request(document_id: str, lines: list[str], collection: str) -> dict:
    image = base64.b64encode(page(lines)).decode()
    tensors = {"id": document_id, "image": image, "collection": collection}
    return {
        "inputs": [
            {"name": name, "shape": [1], "datatype": "BYTES", "data": [value]} for name, value in tensors.items()
        ]
    }


def search(deployment: DurableDeployment, collection: str, query: str) -> list[dict]:
    """The nlp service's search for people, called through the pipelines' sidecar."""
    nlp = deployment.stack.app_id("nlp")
    url = f"{deployment.replicas[0].sidecar.url}/v1.0/invoke/{nlp}/method/collections/{collection}/search"
    answer = httpx.post(url, json={"query": query}, headers=deployment.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["hits"]


def wait_done(deployment: DurableDeployment, run_id: str) -> dict:
    wait_until(
        lambda: deployment.run("search-ingest", run_id).get("status") in ("ok", "failed"), f"run {run_id} done", 120
    )
    return deployment.run("search-ingest", run_id)


def test_each_event_makes_its_page_searchable_by_meaning_once(deployment: DurableDeployment):
    collection = f"pages-{secrets.token_hex(3)}"
    before = deployment.model_calls("search-index", "nlp")
    events = {name: f"{name}-{secrets.token_hex(4)}" for name in PAGES}
    for name, lines in PAGES.items():
        deployment.publish_event("documents", events[name], request(name, lines, collection))
    runs = {name: wait_done(deployment, f"search-ingest-{event_id}") for name, event_id in events.items()}
    for run in runs.values():
        assert run["status"] == "ok", json.dumps(run)[:3000]
        assert [run["steps"][step]["status"] for step in ("ocr", "embed", "index")] == ["ok"] * 3

    # The final is about football, the rates about money: each query finds its page first.
    assert search(deployment, collection, "a football match and a goal")[0]["id"] == "final"
    assert search(deployment, collection, "money, banks and the economy")[0]["id"] == "rates"
    hits = search(deployment, collection, runs["final"]["steps"]["ocr"]["outputs"]["text"]["data"][0])
    assert hits[0]["id"] == "final" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "striker" in hits[0]["text"] and "scored twice" in hits[0]["text"]

    # The same event again starts nothing; a later one shows the queue has moved past it.
    deployment.publish_event("documents", events["final"], request("final", PAGES["final"], collection))
    marker = f"marker-{secrets.token_hex(4)}"
    deployment.publish_event("documents", marker, request("marker", ["A marker page."], collection))
    assert wait_done(deployment, f"search-ingest-{marker}")["status"] == "ok"
    assert deployment.model_calls("search-index", "nlp") - before == 3
    assert len(search(deployment, collection, "anything")) == 3


def test_an_event_naming_an_invalid_collection_fails_its_run_and_indexes_nothing(deployment: DurableDeployment):
    event_id = f"bad-{secrets.token_hex(4)}"
    deployment.publish_event("documents", event_id, request("x", ["Some text."], "no such/collection"))
    run = wait_done(deployment, f"search-ingest-{event_id}")
    assert run["status"] == "failed"
    assert run["steps"]["index"]["status"] == "failed" and "collection" in run["steps"]["index"]["reason"]
    assert run["steps"]["ocr"]["status"] == "ok"


def test_it_answers_tritonclient_through_the_gateway(deployment: DurableDeployment):
    stack = deployment.stack
    _, _, gateway_port = stack.start_gateway(
        {"tests": KEY}, GATEWAY_SERVICES=",".join([*deployment.services, deployment.pipelines_id])
    )
    client = triton.InferenceServerClient(url=f"127.0.0.1:{gateway_port}", network_timeout=120)
    collection = f"triton-{secrets.token_hex(3)}"
    wait_until(
        lambda: client.is_model_ready("search-ingest", headers={"X-API-Key": KEY}), "search-ingest via the gateway", 60
    )
    tensors = []
    values = {"id": "final", "image": page(PAGES["final"]), "collection": collection}
    for name, value in values.items():
        tensor = triton.InferInput(name, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
        tensors.append(tensor)
    result = client.infer("search-ingest", tensors, headers={"X-API-Key": KEY})
    assert result.as_numpy("size").tolist() == [1]
    assert result.get_response()["parameters"]["steps_ran"] == "ocr,embed,index"
    assert search(deployment, collection, "a football match")[0]["id"] == "final"


def test_a_finished_run_is_purged_after_the_time_runs_are_kept(deployment: DurableDeployment):
    event_id = f"purged-{secrets.token_hex(4)}"
    deployment.publish_event("documents", event_id, request("purged", ["Kept for a while."], "purged"))
    run_id = f"search-ingest-{event_id}"
    assert wait_done(deployment, run_id)["status"] == "ok"
    workflow = f"{deployment.replicas[0].sidecar.url}/v1.0/workflows/dapr/{run_id}"
    assert httpx.get(workflow, headers=deployment.headers).status_code == 200
    # The purge job fires KEPT_SECONDS after the start; then the workflow and its run record are gone.
    wait_until(
        lambda: httpx.get(workflow, headers=deployment.headers).status_code != 200, "the run purged", 3 * KEPT_SECONDS
    )
    assert deployment.call("GET", f"v2/pipelines/search-ingest/runs/{run_id}").status_code == 404
