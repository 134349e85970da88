"""The NLP service: sentence embeddings, sentiment, zero-shot classification and semantic search.

Besides the Open Inference Protocol routes of its models, it answers people in plain JSON.
"""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, FastAPI, Request
from pydantic import BaseModel, Field

from tandem.server import make_app

from .search import Collections
from .settings import NlpSettings

settings = NlpSettings()
Texts = Annotated[list[str], Field(min_length=1, max_length=settings.max_texts)]


class TextsRequest(BaseModel):
    texts: Texts

    model_config = {
        "json_schema_extra": {"examples": [{"texts": ["I love this phone.", "The battery died in a day."]}]}
    }


class ClassifyRequest(BaseModel):
    text: str
    labels: Annotated[dict[str, str] | list[str], Field(min_length=2, max_length=settings.max_labels)] = Field(
        description="label names, or label -> words describing it, e.g. 'football, a match, a goal'"
    )


class Document(BaseModel):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    text: str


class DocumentsRequest(BaseModel):
    documents: Annotated[list[Document], Field(min_length=1, max_length=settings.max_texts)]

    model_config = {
        "json_schema_extra": {
            "examples": [{"documents": [{"id": "goal", "text": "The striker scored twice in the final."}]}]
        }
    }


class SearchRequest(BaseModel):
    query: str
    top_k: Annotated[int, Field(ge=1, le=100)] = 5

    model_config = {"json_schema_extra": {"examples": [{"query": "who won the match?", "top_k": 3}]}}


router = APIRouter(tags=["NLP for people"])
LABEL_TEMPLATE = "This text is about {label}."


async def embed(request: Request, texts: list[str]) -> np.ndarray:
    array = np.array(texts, dtype=object)
    _, results = await request.app.state.dataplane.predict("minilm", {"text": array}, ["embedding"])
    return results["embedding"]


@router.post("/embed")
async def embed_texts(request: Request, body: TextsRequest) -> dict:
    """One unit-length 384-dimensional embedding per text (all-MiniLM-L6-v2)."""
    return {"model": "minilm", "embeddings": (await embed(request, body.texts)).tolist()}


@router.post("/sentiment")
async def sentiment(request: Request, body: TextsRequest) -> dict:
    """negative or positive, with probabilities, per text."""
    model, results = await request.app.state.dataplane.predict(
        "sentiment", {"text": np.array(body.texts, dtype=object)}
    )
    labels = model.card.labels
    return {
        "results": [
            {"text": text, "label": label, "probabilities": dict(zip(labels, map(float, row), strict=True))}
            for text, label, row in zip(body.texts, results["label"], results["probabilities"], strict=True)
        ]
    }


@router.post("/classify")
async def classify(
    request: Request,
    body: Annotated[
        ClassifyRequest,
        Body(
            examples=[
                {
                    "text": "The striker scored twice.",
                    "labels": {"sport": "football, a match, a goal", "finance": "money, markets, banks"},
                }
            ]
        ),
    ],
) -> dict:
    """Zero-shot classification: the labels ranked by how close their descriptions are to the text."""
    labels = body.labels
    if isinstance(labels, list):  # a bare name matches better as a sentence about it
        labels = {label: LABEL_TEMPLATE.format(label=label) for label in labels}
    vectors = await embed(request, [body.text, *labels.values()])
    similarities = vectors[1:] @ vectors[0]
    scores = np.exp((similarities - similarities.max()) / settings.zero_shot_temperature)
    scores /= scores.sum()
    ranked = sorted(zip(labels, similarities, scores, strict=True), key=lambda item: -item[2])
    return {
        "text": body.text,
        "labels": [
            {"label": label, "score": round(float(score), 6), "similarity": round(float(similarity), 6)}
            for label, similarity, score in ranked
        ],
    }


def collections(request: Request) -> Collections:
    return Collections(request.app.state.sidecar, settings.state_store)


@router.put("/collections/{collection}/documents")
async def add_documents(request: Request, collection: str, body: DocumentsRequest) -> dict:
    """Adds or replaces documents; their embeddings are kept in the Dapr state store."""
    vectors = await embed(request, [document.text for document in body.documents])
    documents = {
        document.id: {"text": document.text, "embedding": vector.tolist()}
        for document, vector in zip(body.documents, vectors, strict=True)
    }
    size = await collections(request).upsert(collection, documents)
    return {"collection": collection, "added": len(documents), "size": size}


@router.delete("/collections/{collection}/documents/{document_id}")
async def delete_document(request: Request, collection: str, document_id: str) -> dict:
    size = await collections(request).delete(collection, [document_id])
    return {"collection": collection, "size": size}


@router.post("/collections/{collection}/search")
async def search(request: Request, collection: str, body: SearchRequest) -> dict:
    """The documents closest in meaning to the query, best first."""
    query = (await embed(request, [body.query]))[0]
    return {"collection": collection, "hits": await collections(request).search(collection, query, body.top_k)}


app: FastAPI = make_app("nlp", settings, routers=(router,))
