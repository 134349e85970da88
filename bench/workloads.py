"""The three benchmark models, as every server outside Tandem runs them, and the one request each server gets.

Imported by the raw onnxruntime case, the plain FastAPI app and the peers' model code, inside the peers'
own virtual environments: it needs only numpy, onnxruntime and tokenizers. Tandem serves the same ONNX
files through its own runtimes (`tandem.runtime.OnnxModel`, `nlp.runtimes.TextEmbedder`).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

# The same text for every server: a sentence of ordinary length (17 tokens).
SENTENCE = "A man is playing a guitar on the stage while the crowd sings along."
MAX_TOKENS = 128  # as the minilm card says


@dataclass(frozen=True)
class Workload:
    name: str  # the model's name in models/
    size: str  # tiny, medium, heavy
    input_name: str
    datatype: str
    row_shape: tuple[int, ...]  # one request's input without the batch dimension
    output_name: str

    def onnx(self, models: Path) -> Path:
        return models / self.name / "1" / "model.onnx"

    def rows(self, count: int) -> np.ndarray:
        """`count` request rows: seeded data, the same on every run and for every server."""
        if self.datatype == "BYTES":
            return np.array([SENTENCE] * count, dtype=object)
        values = np.random.default_rng(0).uniform(-1, 1, (1, *self.row_shape)) * _SCALE[self.name]
        return np.repeat(np.round(values, 1).astype(np.float32), count, axis=0)

    def request(self) -> bytes:
        """The Open Inference Protocol JSON body of one request (one row)."""
        row = self.rows(1)
        data = row.tolist() if self.datatype == "BYTES" else row.ravel().tolist()
        tensor = {"name": self.input_name, "shape": list(row.shape), "datatype": self.datatype, "data": data}
        return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


# Input magnitudes like the real ones: scaled diabetes features; BGR pixels minus the mean.
_SCALE = {"diabetes": 0.1, "nsfw": 120.0}

WORKLOADS = {
    workload.name: workload
    for workload in (
        Workload("diabetes", "tiny", "input", "FP32", (10,), "variable"),
        Workload("minilm", "medium", "text", "BYTES", (), "embedding"),
        # The plain tensor interface of the card (`tensor_interface`): every server gets the same tensor.
        Workload("nsfw", "heavy", "input:0", "FP32", (224, 224, 3), "outputs"),
    )
}


def session(path: Path) -> ort.InferenceSession:
    """One onnxruntime session with Tandem's thread settings (one intra-op thread, sequential)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load(workload: Workload, models: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a batch of input rows to the batch of outputs, warmed up."""
    graph = session(workload.onnx(models))
    if workload.datatype == "BYTES":
        predict = _text_model(graph, models / workload.name / "1" / "tokenizer.json")
    else:
        input_name = graph.get_inputs()[0].name

        def predict(rows: np.ndarray) -> np.ndarray:
            return graph.run([workload.output_name], {input_name: rows})[0]

    predict(workload.rows(1))  # the first run allocates and plans: not on a measured request
    return predict


def _text_model(graph: ort.InferenceSession, tokenizer_file: Path) -> Callable[[np.ndarray], np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=MAX_TOKENS, strategy="longest_first")
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")

    def predict(texts: np.ndarray) -> np.ndarray:
        strings = [text.decode() if isinstance(text, bytes) else str(text) for text in texts.ravel()]
        encodings = tokenizer.encode_batch(strings)
        feed = {
            "input_ids": np.array([encoding.ids for encoding in encodings], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64),
        }
        return graph.run(["embedding"], feed)[0]

    return predict
