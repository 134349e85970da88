"""Semantic search: documents and their embeddings kept in the Dapr state store, one key per collection.

Writers race through ETags (read, change, write if unchanged, else read again), so two replicas adding
documents at once both land. Embeddings are unit length: cosine similarity is a dot product.
"""

from typing import Any

import numpy as np

from tandem.repository import check_name
from tandem.sidecar import Sidecar

ATTEMPTS = 20


class Collections:
    def __init__(self, sidecar: Sidecar, store: str):
        self.sidecar = sidecar
        self.store = store

    def _key(self, collection: str) -> str:
        return f"search-{check_name('collection', collection)}"

    async def documents(self, collection: str) -> dict[str, dict[str, Any]]:
        value, _ = await self.sidecar.get_state(self.store, self._key(collection))
        return (value or {}).get("documents", {})

    async def upsert(self, collection: str, documents: dict[str, dict[str, Any]]) -> int:
        """Adds or replaces documents (id -> {"text", "embedding"}); returns the collection's size."""
        return await self._change(collection, lambda stored: stored.update(documents))

    async def delete(self, collection: str, ids: list[str]) -> int:
        return await self._change(collection, lambda stored: [stored.pop(id_, None) for id_ in ids])

    async def _change(self, collection: str, change) -> int:
        async def changed(value: Any) -> tuple[dict[str, Any], int]:
            stored = (value or {}).get("documents", {})
            change(stored)
            return {"documents": stored}, len(stored)

        return await self.sidecar.update_state(self.store, self._key(collection), changed, attempts=ATTEMPTS)

    async def search(self, collection: str, query: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        stored = await self.documents(collection)
        if not stored:
            return []
        ids = list(stored)
        embeddings = np.array([stored[id_]["embedding"] for id_ in ids], dtype=np.float32)
        scores = embeddings @ query
        best = np.argsort(-scores)[:top_k]
        return [{"id": ids[i], "text": stored[ids[i]]["text"], "score": round(float(scores[i]), 6)} for i in best]
