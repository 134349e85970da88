"""Runtimes of the text models: UTF-8 text in, tokenised here, one ONNX graph from tokens to the answer."""

from pathlib import Path

import numpy as np

from tandem.card import ModelCard, TokenizerCard
from tandem.protocol import InferenceError
from tandem.runtime import Model, onnx_session
from tandem.text import decode_texts

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
