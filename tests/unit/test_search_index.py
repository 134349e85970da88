"""The search-index model (nlp's collections as a model) with its sidecar faked: documents land in their
collection's state key with unit-length embeddings, the same id replaces; every bad input gets a 400 naming it, a
state store that cannot be reached a 503.

Bad inputs tried: id, text and embedding of different lengths, an empty id, an embedding of zeros, a collection name
with a slash."""

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from nlp.runtimes import SearchIndex
from nlp.search import Collections
from tandem.card import ModelCard
from tandem.protocol import InferenceError
from tandem.sidecar import Sidecar


class FakeStore:
    """A state store behind a fake sidecar: GET and POST of keys, as the kit's Sidecar calls them."""

    def __init__(self, down: bool = False) -> None:
        self.values: dict[str, object] = {}
        self.down = down

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("refused")
        if request.method == "GET":
            key = request.url.path.rsplit("/", 1)[1]
            return (
                httpx.Response(200, json=self.values[key], headers={"etag": "1"})
                if key in self.values
                else httpx.Response(204)
            )
        for item in json.loads(request.content):
            self.values[item["key"]] = item["value"]
        return httpx.Response(204)


@pytest.fixture
def index(model_repository: Path):
    def make(store: FakeStore) -> SearchIndex:
        model = SearchIndex(
            model_repository / "search-index" / "1", ModelCard.read(model_repository / "search-index" / "1")
        )
        model.collections = Collections(Sidecar("http://sidecar", transport=httpx.MockTransport(store)), "statestore")
        return model

    return make


def texts(*values: str) -> np.ndarray:
    return np.array(values, dtype=object)


def call(model: SearchIndex, ids, documents, embeddings, collection: str = "pages") -> dict[str, np.ndarray]:
    inputs = {
        "collection": texts(collection),
        "id": texts(*ids),
        "text": texts(*documents),
        "embedding": np.asarray(embeddings, np.float32),
    }
    model.check(inputs)
    return asyncio.run(model.run(inputs, ["size"]))


def test_documents_land_unit_length_and_the_same_id_replaces(index):
    store = FakeStore()
    model = index(store)
    embedding = np.zeros((1, 384), np.float32)
    embedding[0, 0] = 3.0
    assert call(model, ["a"], ["first"], embedding)["size"].tolist() == [1]
    assert call(model, ["a", "b"], ["again", "second"], np.vstack([embedding, -embedding]))["size"].tolist() == [2]
    documents = store.values["search-pages"]["documents"]
    assert documents["a"]["text"] == "again" and documents["a"]["embedding"][0] == pytest.approx(1.0)
    assert documents["b"]["embedding"][0] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("ids", "documents", "rows", "collection", "message"),
    [
        (["a", "b"], ["one"], 2, "pages", "one entry per document"),
        ([""], ["one"], 1, "pages", "1 to 200 characters"),
        (["a"], ["one"], 0, "pages", "all zeros"),
        (["a"], ["one"], 1, "no/slashes", "collection"),
    ],
)
def test_bad_inputs_are_refused_naming_what_is_wrong(index, ids, documents, rows, collection, message):
    embeddings = np.ones((max(rows, 1), 384), np.float32) * (1 if rows else 0)
    with pytest.raises(InferenceError, match=message) as raised:
        call(index(FakeStore()), ids, documents, embeddings, collection)
    assert raised.value.status_code == 400


def test_a_state_store_out_of_reach_is_a_503(index):
    with pytest.raises(InferenceError, match="could not be written") as raised:
        call(index(FakeStore(down=True)), ["a"], ["one"], np.ones((1, 384), np.float32))
    assert raised.value.status_code == 503
