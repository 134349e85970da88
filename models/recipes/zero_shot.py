"""zero-shot: labels a text with whichever of the labels given beside it fits best, from all-MiniLM-L6-v2
embeddings; no training data.

The text and a sentence about each label ("This text is about <label>.") are embedded; the label scores are a
softmax of the cosines over a temperature, as the nlp service's POST /classify computes them for people. The
graph is minilm's encoder, in its own folder so the folder is self-contained.
"""

from pathlib import Path

import numpy as np

from recipes import minilm

NAME = "zero-shot"
VERSION = "1"
SERVICE = "nlp"
PACKAGES = minilm.PACKAGES
TEMPLATE = "This text is about {label}."
TEMPERATURE = 0.05  # the nlp service's zero_shot_temperature default

CHECK_TEXT = "The striker scored twice in the final."
CHECK_LABELS = ["sport", "finance", "cooking"]


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx and tokenizer.json into `folder`; nothing here is random, so `seed` is unused."""
    graph, embedding = minilm.encoder_graph()
    dimensions = minilm.config()["hidden_size"]
    model = minilm.to_model(graph, {embedding: ("embedding", ["batch", dimensions])}, NAME)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    minilm.copy_tokenizer(folder)
    vectors = minilm.embed(model, [CHECK_TEXT, *(TEMPLATE.format(label=label) for label in CHECK_LABELS)])
    similarities = vectors[1:] @ vectors[0]
    return {
        "description": "Zero-shot classification of English text over the labels given with it (minilm embeddings).",
        "runtime": "nlp.runtimes:ZeroShotClassifier",
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [-1], "description": "one UTF-8 text each"},
            {"name": "labels", "datatype": "BYTES", "shape": [-1], "description": "the candidate labels, 2 or more"},
        ],
        "outputs": [
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1], "description": "per text, one per label"},
            {"name": "label", "datatype": "BYTES", "shape": [-1], "description": "per text, the best label"},
        ],
        "parameters": {"template": TEMPLATE, "temperature": TEMPERATURE},
        "preprocessing": "BERT uncased WordPiece (tokenizer.json), [CLS] ... [SEP], truncated to 128 tokens",
        "tokenizer": minilm.tokenizer_card(),
        "metrics": {
            "check": f"{CHECK_TEXT!r} over {CHECK_LABELS}",
            "best_label": CHECK_LABELS[int(np.argmax(similarities))],
        },
        "data": minilm.data_card(),
    }
