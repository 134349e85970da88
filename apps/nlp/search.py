"""Semantic search: documents and their embeddings kept in the Dapr state store, one key per collection.

Writers race through ETags (read, change, write if unchanged, else read again), so two replicas adding
documents at once both land. Embeddings are unit length: cosine similarity is a dot product.
"""

from typing import Any

import numpy as np

from tandem.repository import check_name
from tandem.sidecar import ETagMismatch, Sidecar, SidecarError

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
        key = self._key(collection)
        for _ in range(ATTEMPTS):
            value, etag = await self.sidecar.get_state(self.store, key)
            stored = (value or {}).get("documents", {})
            change(stored)
            try:
                await self.sidecar.save_state(
                    self.store, key, {"documents": stored}, etag=etag, only_if_absent=etag is None
                )
                return len(stored)
            except ETagMismatch:
                continue
            except SidecarError:
                if etag is None and (await self.sidecar.get_state(self.store, key))[1] is not None:
                    continue  # someone else created the collection first: start again from theirs
                raise
        raise SidecarError(409, "too many concurrent writers", f"update collection {collection}")

    async def search(self, collection: str, query: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        stored = await self.documents(collection)
        if not stored:
            return []
        ids = list(stored)
        embeddings = np.array([stored[id_]["embedding"] for id_ in ids], dtype=np.float32)
        scores = embeddings @ query
        best = np.argsort(-scores)[:top_k]
        return [{"id": ids[i], "text": stored[ids[i]]["text"], "score": round(float(scores[i]), 6)} for i in best]
