"""Runtimes of the text models: UTF-8 text in, tokenised here, one ONNX graph from tokens to the answer; and the
semantic search index as a model, so that a pipeline can write to it."""

from pathlib import Path

import httpx
import numpy as np

from tandem.card import ModelCard, TokenizerCard
from tandem.protocol import InferenceError
from tandem.runtime import Model, onnx_session
from tandem.sidecar import Sidecar, SidecarError
from tandem.text import decode_texts

from .search import Collections
from .settings import NlpSettings
from .text import TextTokeniser


class TextModel(Model):
    """A model.onnx taking input_ids/attention_mask, served behind one BYTES input `text`."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        settings = card.tokenizer or TokenizerCard()
        self.tokeniser = TextTokeniser(
            folder / settings.file, max_tokens=settings.max_tokens, max_characters=settings.max_characters
        )
        self.session = onnx_session(folder / card.artefact, intra_op_threads)
        # The first run allocates and plans; pay for it at load, not on a user's request.
        self.forward(["warm up"])

    def forward(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Every output of the graph for `texts`, by name."""
        names = [output.name for output in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, self.tokeniser.encode(texts)), strict=True))

    def texts(self, inputs: dict[str, np.ndarray]) -> list[str]:
        return decode_texts(inputs["text"])


class TextEmbedder(TextModel):
    """One unit-length sentence embedding per text."""

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return {"embedding": self.forward(self.texts(inputs))["embedding"]}


class SentimentClassifier(TextModel):
    """Class probabilities per text (in the card's label order) and the most probable label."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.labels = list(card.labels or [])

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        probabilities = self.forward(self.texts(inputs))["probabilities"]
        labels = np.array([self.labels[index] for index in probabilities.argmax(axis=1)], dtype=object)
        return {"probabilities": probabilities, "label": labels}


class ZeroShotClassifier(TextModel):
    """Per text, a score for each of the labels given beside it (a softmax of the cosines between the text and a
    sentence about each label, over a temperature) and the best label."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.template = card.parameters["template"]
        self.temperature = float(card.parameters["temperature"])

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        texts, labels = self.texts(inputs), decode_texts(inputs["labels"], "labels")
        if len(labels) < 2:
            raise InferenceError(f"labels must hold 2 or more labels to choose from, got {len(labels)}")
        sentences = [self.template.format(label=label) for label in labels]
        vectors = self.forward(texts + sentences)["embedding"]
        similarities = vectors[: len(texts)] @ vectors[len(texts) :].T
        scores = np.exp((similarities - similarities.max(axis=1, keepdims=True)) / self.temperature)
        scores /= scores.sum(axis=1, keepdims=True)
        best = np.empty(len(texts), dtype=object)
        best[:] = [labels[index] for index in scores.argmax(axis=1)]
        return {"scores": scores.astype(np.float32), "label": best}


class SearchIndex(Model):
    """Adds documents with their embeddings to a semantic search collection (the one `POST /collections/<c>/search`
    searches), replacing those of the same id, so a retried or redelivered call changes nothing; answers the
    collection's size. The collection lives in the state store, reached through the service's sidecar."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.sidecar = Sidecar.from_settings()
        self.collections = Collections(self.sidecar, NlpSettings().state_store)

    async def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:  # type: ignore[override]
        (collection,) = decode_texts(inputs["collection"], "collection")
        ids, texts = decode_texts(inputs["id"], "id"), decode_texts(inputs["text"], "text")
        embeddings = inputs["embedding"]
        if not len(ids) == len(texts) == len(embeddings):
            raise InferenceError(
                f"id, text and embedding must hold one entry per document, got {len(ids)}, {len(texts)} and "
                f"{len(embeddings)}"
            )
        if any(not 0 < len(id_) <= 200 for id_ in ids):
            raise InferenceError("every id must be 1 to 200 characters long")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InferenceError("an embedding of all zeros has no direction to search by")
        unit = embeddings / norms  # search scores are dot products of unit vectors
        documents = {
            id_: {"text": text, "embedding": vector.tolist()}
            for id_, text, vector in zip(ids, texts, unit, strict=True)
        }
        try:
            size = await self.collections.upsert(collection, documents)
        except (SidecarError, httpx.TransportError) as error:
            raise InferenceError(f"the search index could not be written: {error}", 503) from None
        return {"size": np.array([size], dtype=np.int64)}

    async def close(self) -> None:
        await self.sidecar.aclose()
