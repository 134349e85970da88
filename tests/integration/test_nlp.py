"""The NLP service behind its sidecar: text routes, OIP BYTES tensors, and semantic search kept in Redis."""

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from .stack import Stack

pytestmark = pytest.mark.integration

DOCUMENTS = [
    {"id": "goal", "text": "The striker scored twice and the team won the cup final."},
    {"id": "bank", "text": "Shares fell after the bank reported a large quarterly loss."},
    {"id": "bread", "text": "Knead the dough, let it rise, then bake the loaf for forty minutes."},
]


@pytest.fixture(scope="module")
def nlp(stack: Stack, model_repository: Path) -> httpx.Client:
    # Under the sidecar's own 4 MiB limit, so that the app's clear 413 is what a caller sees.
    sidecar, _ = stack.start_service("nlp", model_repository, NLP_MAX_BODY_BYTES=str(1024 * 1024))
    base = f"{sidecar.url}/v1.0/invoke/{sidecar.app_id}/method"
    with httpx.Client(base_url=base, headers={"dapr-api-token": stack.dapr_api_token}, timeout=30) as client:
        client.sidecar_port = sidecar.http_port
        yield client


def test_documents_are_searchable_by_meaning(nlp: httpx.Client):
    added = nlp.put("/collections/news/documents", json={"documents": DOCUMENTS})
    assert added.status_code == 200, added.text
    assert added.json()["size"] == 3
    for query, expected in [
        ("who won the football match?", "goal"),
        ("stock market losses", "bank"),
        ("how do I make bread", "bread"),
    ]:
        hits = nlp.post("/collections/news/search", json={"query": query, "top_k": 2}).json()["hits"]
        assert hits[0]["id"] == expected, (query, hits)
        assert len(hits) == 2

    assert nlp.delete("/collections/news/documents/bank").json()["size"] == 2
    hits = nlp.post("/collections/news/search", json={"query": "stock market losses"}).json()["hits"]
    assert "bank" not in [hit["id"] for hit in hits]


def test_concurrent_writers_all_land(nlp: httpx.Client, stack: Stack):
    async def add_all():
        async with httpx.AsyncClient(base_url=str(nlp.base_url), headers=dict(nlp.headers), timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.put(
                        "/collections/race/documents", json={"documents": [{"id": f"d{n}", "text": f"note {n}"}]}
                    )
                    for n in range(8)
                )
            )

    responses = asyncio.run(add_all())
    assert {response.status_code for response in responses} == {200}
    hits = nlp.post("/collections/race/search", json={"query": "note", "top_k": 100}).json()["hits"]
    assert sorted(hit["id"] for hit in hits) == [f"d{n}" for n in range(8)]


def test_sentiment_and_zero_shot_classification(nlp: httpx.Client):
    results = nlp.post("/sentiment", json={"texts": ["I love this, it works perfectly.", "Terrible, it broke."]}).json()
    assert [result["label"] for result in results["results"]] == ["positive", "negative"]
    ranked = nlp.post(
        "/classify",
        json={"text": "Add the flour and bake for twenty minutes.", "labels": ["sport", "finance", "cooking"]},
    ).json()["labels"]
    assert ranked[0]["label"] == "cooking"
    assert sum(label["score"] for label in ranked) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize(
    ("route", "body", "status", "message"),
    [
        ("/embed", {"texts": [""]}, 400, "empty"),
        ("/embed", {"texts": ["x" * 900_000]}, 400, "limit is 2000"),
        ("/sentiment", {"texts": ["word " * 600_000]}, 413, "over the limit"),
        ("/embed", {"texts": []}, 422, "at least 1"),
        ("/classify", {"text": "hi", "labels": ["only one"]}, 422, "at least 2"),
        ("/collections/../search", {"query": "x"}, 404, ""),
        ("/collections/a..b/search", {"query": "x"}, 400, "not a valid name"),
    ],
)
def test_bad_text_requests(nlp: httpx.Client, route, body, status, message):
    response = nlp.post(route, json=body)
    assert response.status_code == status, response.text
    assert message in response.json().get("error", "")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_minilm_over_oip_with_bytes_tensors(nlp: httpx.Client, stack: Stack, binary: bool):
    client = triton.InferenceServerClient(url=f"127.0.0.1:{nlp.sidecar_port}")
    headers = {"dapr-api-token": stack.dapr_api_token, "dapr-app-id": stack.app_id("nlp")}
    texts = np.array(["A man is playing a guitar.", "Someone plays an instrument."], dtype=object)
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=binary)
    result = client.infer("minilm", [tensor], headers=headers)
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1, atol=1e-5)
    reference = np.array(nlp.post("/embed", json={"texts": texts.tolist()}).json()["embeddings"], dtype=np.float32)
    np.testing.assert_allclose(embedding, reference, atol=1e-6)
