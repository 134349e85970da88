"""sentiment: negative or positive, zero-shot from all-MiniLM-L6-v2 embeddings; no training data.

A text's embedding is compared (cosine) with the embeddings of short descriptions of each label,
written below in pairs on the same topic so that the topic cancels out and the sentiment is left.
A label's score is the mean of its 3 closest descriptions: on hand-written reviews that beat both
the closest single description and the mean of all of them (one odd description or a few
off-topic ones weigh less). The two scores, divided by a temperature, go through a softmax.

The graph is minilm's encoder with this head on top, in its own folder so the folder is
self-contained.
"""

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from recipes import minilm

NAME = "sentiment"
VERSION = "1"
SERVICE = "nlp"
PACKAGES = minilm.PACKAGES
LABELS = ["negative", "positive"]

# (positive, negative) descriptions on the same topic.
DESCRIPTIONS = [
    ("This is great, I love it.", "This is terrible, I hate it."),
    ("A wonderful, delightful experience.", "An awful, disappointing experience."),
    ("I am very happy and satisfied.", "I am very unhappy and dissatisfied."),
    ("Excellent quality, highly recommended.", "Poor quality, not recommended."),
    ("The best I have ever had, absolutely fantastic.", "The worst I have ever had, absolutely horrible."),
    ("It works perfectly.", "It is broken and does not work."),
    ("Worth every penny.", "A complete waste of money."),
    ("I enjoyed every moment of it.", "I regretted every moment of it."),
    ("The service was friendly and helpful.", "The service was rude and unhelpful."),
    ("The food was delicious.", "The food was disgusting."),
    ("A brilliant, gripping film.", "A dull, boring film."),
    ("The place was clean and comfortable.", "The place was dirty and uncomfortable."),
    ("I will definitely come back.", "I will never come back."),
    ("It exceeded my expectations.", "It fell far short of my expectations."),
]
CLOSEST = 3  # descriptions averaged into a label's score
# Scores are cosines, a few hundredths apart for a mild text: dividing by 0.03 turns a 0.066 lead
# into 90% (0.02 to 0.08 all gave the same accuracy on the evaluation set; 0.03 is not overconfident).
TEMPERATURE = 0.03

# Hand-written reviews to measure the model with, (positive, negative) on the same topic; not used to build it.
EVALUATION = [
    ("The battery lasts all day, which is fantastic.", "The battery dies within an hour."),
    ("Lovely little cafe with great coffee.", "The coffee was bitter and overpriced."),
    ("The instructions were clear and setup took minutes.", "The instructions were confusing and parts were missing."),
    ("She gave a stunning performance.", "The singer was off key all night."),
    ("The garden looks gorgeous this spring.", "The garden is full of weeds and rubbish."),
    ("Our guide was knowledgeable and funny.", "Our guide was late and clearly bored."),
    ("This camera takes sharp, vivid pictures.", "The photos come out blurry and dark."),
    ("I feel so grateful for such kind friends.", "I feel lonely and let down by everyone."),
    ("The train was quiet, on time and comfortable.", "The train was packed, late and freezing."),
    ("Shipping was fast and the packaging was neat.", "The package arrived crushed and soaking wet."),
    ("The course taught me a lot and the teacher was patient.", "The teacher was impatient and the course was a mess."),
    ("Comfortable shoes, I wear them every day.", "These shoes gave me blisters on day one."),
    ("The sequel is even better than the original.", "The sequel is a pale, lazy copy of the original."),
    ("Fixing the bug was easy thanks to the great docs.", "The documentation is outdated and wrong."),
    ("Everyone at the party had a wonderful time.", "Nobody enjoyed the party, it was awkward."),
    ("The pizza was hot, crispy and tasty.", "The pizza was soggy and burnt."),
]


def label_descriptions() -> dict[str, list[str]]:
    positive, negative = zip(*DESCRIPTIONS, strict=True)
    return {"negative": list(negative), "positive": list(positive)}


def label_score(graph: minilm.GraphWriter, embedding: str, label: str, description_embeddings: np.ndarray) -> str:
    """[batch, 1]: the mean cosine between each embedding and the label's closest descriptions."""
    cosines = graph.op("MatMul", embedding, graph.constant(f"{label}_descriptions", description_embeddings.T.copy()))
    values, indices = f"{label}_closest", f"{label}_closest_indices"
    graph.nodes.append(helper.make_node("TopK", [cosines, "closest"], [values, indices], name=values, axis=-1))
    return graph.op("ReduceMean", values, "axis_minus_1", keepdims=1)


def add_head(graph: minilm.GraphWriter, embedding: str, description_embeddings: dict[str, np.ndarray]) -> str:
    graph.constant("closest", np.array([CLOSEST], np.int64))
    graph.constant("inverse_temperature", np.array(1.0 / TEMPERATURE, np.float32))
    scores = [label_score(graph, embedding, label, description_embeddings[label]) for label in LABELS]
    logits = graph.op("Mul", graph.op("Concat", *scores, axis=-1), "inverse_temperature")
    return graph.op("Softmax", logits, axis=-1)


def evaluate(model: onnx.ModelProto) -> dict:
    positive, negative = zip(*EVALUATION, strict=True)
    texts = list(negative) + list(positive)
    truth = np.array([0] * len(negative) + [1] * len(positive))
    probabilities = minilm.embed(model, texts, output="probabilities")
    return {"evaluation_texts": len(texts), "accuracy": round(float((probabilities.argmax(1) == truth).mean()), 4)}


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx and tokenizer.json into `folder`; nothing here is random, so `seed` is unused."""
    graph, embedding = minilm.encoder_graph()
    encoder = minilm.to_model(graph, {embedding: ("embedding", ["batch", minilm.config()["hidden_size"]])}, NAME)
    descriptions = label_descriptions()
    description_embeddings = {label: minilm.embed(encoder, texts) for label, texts in descriptions.items()}
    probabilities = add_head(graph, embedding, description_embeddings)
    model = minilm.to_model(graph, {probabilities: ("probabilities", ["batch", len(LABELS)])}, NAME)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    minilm.copy_tokenizer(folder)
    return {
        "description": "Sentiment (negative/positive) of English text, zero-shot against label descriptions.",
        "runtime": "nlp.runtimes:SentimentClassifier",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1], "description": "one UTF-8 text each"}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
        "labels": LABELS,
        "preprocessing": "BERT uncased WordPiece (tokenizer.json), [CLS] ... [SEP], truncated to 128 tokens",
        "tokenizer": minilm.tokenizer_card(),
        "details": {
            "embedding": "all-MiniLM-L6-v2, as the minilm model",
            "score": f"mean cosine to the label's {CLOSEST} closest descriptions",
            "temperature": TEMPERATURE,
            "descriptions": descriptions,
        },
        "metrics": evaluate(model),
        "data": {
            **minilm.data_card(),
            "descriptions_sha256": hashlib.sha256(repr(DESCRIPTIONS).encode()).hexdigest(),
        },
    }
