"""The Hugging Face runtime (`runtime: huggingface`): a model folder as transformers and `optimum-cli export onnx`
leave it, served over onnxruntime.

The folder holds config.json, the tokenizer files and an ONNX graph (model.onnx at its root or in onnx/; the card's
`artefact` names it). transformers reads the config and the tokenizer (AutoConfig, AutoTokenizer: neither needs
torch); onnxruntime runs the graph. The model takes one BYTES tensor `text` (UTF-8, one text per element); what it
gives depends on the card's `task`:
- text-classification: `probabilities` FP32 [-1, labels] (softmax of the logits, or a sigmoid per label when
  config.json's problem_type is multi_label_classification) and `label` BYTES [-1], the most probable of id2label.
- feature-extraction: `embedding` FP32 [-1, dim]: the graph's own `sentence_embedding` if it has one, else its token
  vectors pooled as the folder's sentence-transformers config says (modules.json, 1_Pooling/config.json), else their
  mean over the attention mask, not normalised.
- token-classification: `entities` BYTES [-1], per text a JSON list of {entity, score, word, start, end}: tokens of
  one label merged, B-/I- prefixes dropped, "O" left out (the "simple" aggregation of transformers' pipeline).

`card_fields` is what `tandem add` writes into the card of such a folder.
"""

import json
import os
import threading
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import onnxruntime as ort

from .card import CARD_FILE, ModelCard, Task, TokenizerCard
from .runtime import Model, TensorSpec, graph_specs, onnx_session
from .text import check_texts, decode_texts

# transformers warns at import that without torch "models won't be available": true, and beside the point here, where
# onnxruntime runs the model; the warning would only mislead whoever reads the log.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase  # noqa: E402

TASKS: tuple[str, ...] = get_args(Task)
# What a transformers encoder's ONNX export takes; all three come from the tokenizer.
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Any one of these lets AutoTokenizer build the tokenizer (tokenizer.json is what fast tokenizers save).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "spm.model",
    "tokenizer.model",
)
# A tokenizer saved without tokenizer_config.json claims an unbounded model_max_length; BERT-sized encoders have 512
# positions, and config.json's max_position_embeddings bounds the graph further when it says less.
MAX_TOKENS_CAP = 512
GRAPH_OUTPUTS = {  # per task, the graph outputs it can use, in order of preference, and their rank
    "text-classification": (("logits",), 2),
    "token-classification": (("logits",), 3),
    "feature-extraction": (("sentence_embedding", "last_hidden_state", "token_embeddings"), None),
}
POOLING_MODES = {  # sentence-transformers' Pooling config keys, in the order it concatenates them
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
UNSUPPORTED_POOLING = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as JSON: {error}") from None


def check_folder(folder: Path) -> None:
    """Refuses a folder without config.json or without tokenizer files, before transformers gives a vaguer error."""
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder}: no config.json; a Hugging Face model folder holds config.json, the tokenizer files and an ONNX "
            "graph (`optimum-cli export onnx` writes all three)"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{folder}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); save the tokenizer into the folder "
            "with tokenizer.save_pretrained(folder)"
        )


# transformers and tokenizers raise many kinds of exception for a file they cannot read (tokenizers a bare Exception):
# whatever it is, the message must name the folder.
def read_config(folder: Path) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as error:
        raise ValueError(f"{folder / 'config.json'}: transformers cannot read it: {error}") from None


def read_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as error:
        raise ValueError(f"{folder}: transformers cannot load the tokenizer: {error}") from None
    if tokenizer.pad_token is None:
        raise ValueError(f"{folder}: the tokenizer has no padding token, so texts of a batch cannot be padded")
    return tokenizer


def graph_session(path: Path, intra_op_threads: int) -> ort.InferenceSession:
    try:
        return onnx_session(path, intra_op_threads)
    except Exception as error:  # onnxruntime raises its own exception types for every kind of bad file
        raise ValueError(f"{path}: not an ONNX graph onnxruntime can load: {error}") from None


def find_graph(folder: Path) -> str:
    """The ONNX graph's path relative to `folder`: model.onnx, onnx/model.onnx, or the only .onnx file there."""
    for candidate in ("model.onnx", "onnx/model.onnx"):
        if (folder / candidate).is_file():
            return candidate
    found = sorted(
        path.relative_to(folder).as_posix() for pattern in ("*.onnx", "onnx/*.onnx") for path in folder.glob(pattern)
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(
            f"{folder}: no ONNX graph (model.onnx or onnx/model.onnx); export the model with `optimum-cli export onnx`"
        )
    raise ValueError(f"{folder}: several ONNX graphs ({', '.join(found)}) and none named model.onnx: keep one")


def detect_task(folder: Path, config: PretrainedConfig) -> str:
    """The task config.json's architectures say (a sentence-transformers folder embeds)."""
    architectures = list(config.architectures or [])
    for architecture in architectures:
        if architecture.endswith("ForSequenceClassification"):
            return "text-classification"
        if architecture.endswith("ForTokenClassification"):
            return "token-classification"
    if (folder / "modules.json").is_file() or any(architecture.endswith("Model") for architecture in architectures):
        return "feature-extraction"
    raise ValueError(
        f"{folder / 'config.json'}: cannot tell the task from architectures {architectures}; name one of "
        f"{list(TASKS)} (*ForSequenceClassification, *ForTokenClassification and *Model are recognised)"
    )


def check_task(folder: Path, task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"{folder}: unknown task {task!r}; the huggingface runtime serves {list(TASKS)}")
    return cast(Task, task)


def token_inputs(graph: list[TensorSpec], path: Path) -> list[TensorSpec]:
    """The graph's inputs, refused unless they are token ids (and the masks) as the tokenizer makes them."""
    names = [spec.name for spec in graph]
    wrong = [spec for spec in graph if spec.name not in TOKEN_INPUTS or spec.datatype not in ("INT64", "INT32")]
    if wrong or "input_ids" not in names:
        described = ", ".join(f"{spec.name} {spec.datatype} {spec.shape}" for spec in graph)
        raise ValueError(
            f"{path}: the graph's inputs ({described}) are not token ids: a Hugging Face graph takes input_ids and "
            f"optionally attention_mask and token_type_ids, INT64 or INT32 [batch, tokens]"
        )
    return graph


def task_output(task: str, graph: list[TensorSpec], path: Path) -> TensorSpec:
    """The graph output the task reads, refused when the graph has none of the right name and rank."""
    names, rank = GRAPH_OUTPUTS[task]
    by_name = {spec.name: spec for spec in graph}
    for name in names:
        spec = by_name.get(name)
        if spec is None:
            continue
        want = rank or (2 if name == "sentence_embedding" else 3)
        if len(spec.shape) != want or spec.datatype != "FP32":
            raise ValueError(
                f"{path}: output {name!r} is {spec.datatype} {spec.shape}; {task} needs FP32 of rank {want}"
            )
        return spec
    raise ValueError(
        f"{path}: the graph's outputs {sorted(by_name)} do not fit {task}, which reads one of {list(names)}"
    )


def labels_of(config: PretrainedConfig, folder: Path) -> list[str]:
    """id2label as a list in class-index order."""
    id2label = {int(index): str(label) for index, label in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"{folder / 'config.json'}: id2label must number its labels 0..n-1, got {sorted(id2label)}")
    return [id2label[index] for index in range(len(id2label))]


def pooling_of(folder: Path) -> tuple[list[str], bool]:
    """sentence-transformers' pooling modes and whether it normalises, from modules.json; mean, not normalised, when
    the folder has no such config. Modules other than the transformer, pooling and normalisation are refused."""
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return ["mean"], False
    modes, normalise = ["mean"], False
    for module in read_json(modules_path):
        kind = module.get("type", "")
        name = kind.rpartition(".")[2]  # the class name: sentence_transformers.models.Pooling is "Pooling"
        if name == "Pooling":
            modes = _pooling_modes(folder / module.get("path", "") / "config.json")
        elif name == "Normalize":
            normalise = True
        elif name != "Transformer":
            raise ValueError(
                f"{modules_path}: module {kind!r} is not supported (only Transformer, Pooling and Normalize); export "
                "the whole model with `optimum-cli export onnx` so the graph gives sentence_embedding"
            )
    return modes, normalise


def _pooling_modes(path: Path) -> list[str]:
    settings = read_json(path)
    unsupported = [key for key in UNSUPPORTED_POOLING if settings.get(key)]
    modes = [mode for key, mode in POOLING_MODES.items() if settings.get(key)]
    if unsupported or not modes:
        raise ValueError(
            f"{path}: pooling {unsupported or 'none'} is not supported; use cls, max, mean or mean_sqrt_len"
        )
    return modes


def default_max_tokens(folder: Path, tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
    """sentence-transformers' max_seq_length when the folder has one, else the tokenizer's limit, capped."""
    limit = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", None) or MAX_TOKENS_CAP)
    limit = min(limit, MAX_TOKENS_CAP)
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        limit = min(limit, int(read_json(sentence_config).get("max_seq_length", limit)))
    return int(limit)


def task_outputs(task: str, width: int) -> list[dict[str, Any]]:
    """The card's outputs of a task; `width` is the label count or the embedding's size."""
    if task == "text-classification":
        return [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [-1, width],
                "description": "per label, in the order of labels",
            },
            {"name": "label", "datatype": "BYTES", "shape": [-1], "description": "the most probable label"},
        ]
    if task == "feature-extraction":
        return [{"name": "embedding", "datatype": "FP32", "shape": [-1, width], "description": "one vector per text"}]
    return [
        {
            "name": "entities",
            "datatype": "BYTES",
            "shape": [-1],
            "description": "per text, the entities found",
            "content": 'JSON list of {"entity", "score", "word", "start", "end"} (start and end: character offsets)',
        }
    ]


TEXT = TensorSpec("text", "BYTES", [-1])  # the one input of every task


def card_fields(folder: Path, task: str | None = None) -> dict[str, Any]:
    """What `tandem add` writes into the card of the Hugging Face folder `folder` (all but name and version).

    `task` overrides the one config.json's architectures say. ValueError names the folder and what is wrong.
    """
    check_folder(folder)
    config = read_config(folder)
    tokenizer = read_tokenizer(folder)
    chosen = check_task(folder, task if task is not None else detect_task(folder, config))
    artefact = find_graph(folder)
    graph_inputs, graph_outputs = graph_specs(graph_session(folder / artefact, 1))
    token_inputs(graph_inputs, folder / artefact)
    output = task_output(chosen, graph_outputs, folder / artefact)
    width, labels, postprocessing = _task_card(chosen, folder, config, output)
    max_tokens = default_max_tokens(folder, tokenizer, config)
    architecture = (config.architectures or [type(config).__name__])[0]
    # AutoConfig puts the folder's path in name_or_path; config.json itself names the model it was saved from.
    source = read_json(folder / "config.json").get("_name_or_path")
    fields: dict[str, Any] = {
        "runtime": "huggingface",
        "task": chosen,
        "artefact": artefact,
        "description": f"{chosen} with {architecture}" + (f" ({source})" if source else ""),
        "inputs": [
            {"name": TEXT.name, "datatype": TEXT.datatype, "shape": TEXT.shape, "description": "one UTF-8 text each"}
        ],
        "outputs": task_outputs(chosen, width),
        "preprocessing": f"the folder's tokenizer: padded to the longest text of a batch, truncated to {max_tokens} "
        "tokens",
        "postprocessing": postprocessing,
        "tokenizer": {
            "file": next(name for name in TOKENIZER_FILES if (folder / name).is_file()),
            "max_tokens": max_tokens,
            "max_characters": TokenizerCard().max_characters,
            "lowercase": bool(getattr(tokenizer, "do_lower_case", False)),
            "truncation": "longest_first",
            "padding": "longest in the batch",
        },
        "details": {
            "architecture": architecture,
            "model_type": config.model_type,
            "graph": {
                "inputs": {spec.name: f"{spec.datatype} {spec.shape}" for spec in graph_inputs},
                "output": f"{output.name} {output.datatype} {output.shape}",
            },
        },
    }
    if labels is not None:
        fields["labels"] = labels
    return fields


def _task_card(
    task: str, folder: Path, config: PretrainedConfig, output: TensorSpec
) -> tuple[int, list[str] | None, str]:
    """The width of the task's output (labels or embedding size), the labels, and the postprocessing, for people."""
    if task == "feature-extraction":
        size = output.shape[-1] if output.shape[-1] != -1 else config.hidden_size
        if output.name == "sentence_embedding":
            return size, None, "the graph's own sentence_embedding"
        modes, normalise = pooling_of(folder)
        pooling = f"{'+'.join(modes)} of {output.name} over the attention mask"
        return size * len(modes), None, pooling + (", then L2 normalisation" if normalise else "")
    labels = labels_of(config, folder)
    if output.shape[-1] not in (-1, len(labels)):
        raise ValueError(
            f"{folder}: the graph's {output.name} give {output.shape[-1]} classes, config.json's id2label has "
            f"{len(labels)} labels"
        )
    if task == "token-classification":
        return len(labels), labels, "softmax per token; tokens of one entity merged (B-/I- dropped), 'O' left out"
    if config.problem_type == "multi_label_classification":
        return len(labels), labels, "a sigmoid per label (multi-label); label: the most probable of id2label"
    return len(labels), labels, "softmax of the logits; label: the most probable of id2label"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def pool(tokens: np.ndarray, mask: np.ndarray, modes: list[str], normalise: bool) -> np.ndarray:
    """sentence-transformers' pooling of token vectors [batch, tokens, dim] over the attention mask [batch, tokens]."""
    weights = mask[..., None].astype(np.float32)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled = []
    for mode in modes:
        if mode == "cls":
            pooled.append(tokens[:, 0])
        elif mode == "max":
            pooled.append(np.where(weights > 0, tokens, np.float32(-1e9)).max(axis=1))
        elif mode == "mean":
            pooled.append((tokens * weights).sum(axis=1) / counts)
        else:
            pooled.append((tokens * weights).sum(axis=1) / np.sqrt(counts))
    embedding = np.concatenate(pooled, axis=1)
    if normalise:
        embedding = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return embedding.astype(np.float32)


def _tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity) of a B-/I- label; a label without a prefix continues its entity."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


class HuggingFaceModel(Model):
    """A Hugging Face folder's tokenizer and config (transformers) over its ONNX graph (onnxruntime)."""

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        if card.task is None:
            raise ValueError(f"{folder / CARD_FILE}: the huggingface runtime needs a task: one of {list(TASKS)}")
        self.task = card.task
        self._check_interface()
        check_folder(folder)
        self.config = read_config(folder)
        self.tokenizer = read_tokenizer(folder)
        settings = card.tokenizer
        self.max_tokens = settings.max_tokens if settings else default_max_tokens(folder, self.tokenizer, self.config)
        self.max_characters = (settings or TokenizerCard()).max_characters
        path = folder / card.artefact
        if not path.is_file():
            raise ValueError(f"{path}: the card's artefact is missing")
        self.session = graph_session(path, intra_op_threads)
        graph_inputs, graph_outputs = graph_specs(self.session)
        self.feeds = {
            spec.name: np.dtype(np.int64 if spec.datatype == "INT64" else np.int32)
            for spec in token_inputs(graph_inputs, path)
        }
        self.graph_output = task_output(self.task, graph_outputs, path).name
        self.labels: list[str] = []
        if self.task != "feature-extraction":
            self.labels = labels_of(self.config, folder)
            if card.labels is not None and card.labels != self.labels:
                raise ValueError(
                    f"{folder / CARD_FILE}: labels {card.labels} differ from config.json's id2label {self.labels}"
                )
        self.multi_label = self.config.problem_type == "multi_label_classification"
        self.modes, self.normalise = (["mean"], False)
        if self.task == "feature-extraction" and self.graph_output != "sentence_embedding":
            self.modes, self.normalise = pooling_of(folder)
        # transformers' fast tokenizer sets truncation and padding on its one Rust tokenizer during a call when they differ
        # from the last call's; requests run in a thread pool, and two at once must not find it mid-change.
        self._tokenizer_lock = threading.Lock()
        # The first run allocates and plans; pay for it at load, not on a user's request. It also proves the graph's
        # outputs fit the card (a label count, an embedding size).
        self._check_results(
            self.run({"text": np.array(["warm up", "a longer text to warm up with"], dtype=object)}, list(self.outputs))
        )

    def _check_interface(self) -> None:
        card_path = self.folder / CARD_FILE
        if list(self.inputs.values()) != [TEXT]:
            said = ", ".join(f"{spec.name} {spec.datatype} {spec.shape}" for spec in self.inputs.values())
            raise ValueError(
                f"{card_path}: a huggingface model takes one input 'text' BYTES [-1], the card says {said}"
            )
        offered = {output["name"]: output["datatype"] for output in task_outputs(self.task, -1)}
        for spec in self.outputs.values():
            if offered.get(spec.name) != spec.datatype:
                raise ValueError(
                    f"{card_path}: output {spec.name!r} {spec.datatype} is not one {self.task} gives; it gives "
                    + ", ".join(f"{name} {datatype}" for name, datatype in offered.items())
                )

    def _check_results(self, results: dict[str, np.ndarray]) -> None:
        for name, spec in self.outputs.items():
            shape = list(results[name].shape)
            if len(shape) != len(spec.shape) or any(
                want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
            ):
                raise ValueError(
                    f"{self.folder / CARD_FILE}: the card says output {name!r} has shape {spec.shape}, the model gives "
                    f"{shape} for two texts"
                )

    def tokenise(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The tokenizer's arrays for `texts`: padded to the longest, truncated to max_tokens."""
        entities = self.task == "token-classification"
        with self._tokenizer_lock:
            encoding = self.tokenizer(
                texts,
                padding="longest",
                truncation="longest_first",
                max_length=self.max_tokens,
                return_tensors="np",
                return_attention_mask=True,
                return_token_type_ids="token_type_ids" in self.feeds,
                return_offsets_mapping=entities,
                return_special_tokens_mask=entities,
            )
        return dict(encoding)

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        texts = decode_texts(inputs["text"])
        check_texts(texts, self.max_characters)
        encoding = self.tokenise(texts)
        feed = {name: encoding[name].astype(dtype) for name, dtype in self.feeds.items()}
        (result,) = self.session.run([self.graph_output], feed)
        if self.task == "text-classification":
            return self._classify(result)
        if self.task == "feature-extraction":
            if self.graph_output == "sentence_embedding":
                return {"embedding": result.astype(np.float32)}
            return {"embedding": pool(result, encoding["attention_mask"], self.modes, self.normalise)}
        return {"entities": self._entities(result, encoding)}

    def _check_label_count(self, logits: np.ndarray, per: str) -> None:
        # Caught by the warm-up at load: a graph's class count does not change between calls.
        if logits.shape[-1] != len(self.labels):
            raise ValueError(
                f"{self.folder / self.card.artefact}: the graph gives {logits.shape[-1]} logits per {per}, "
                f"config.json's id2label has {len(self.labels)} labels"
            )

    def _classify(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        self._check_label_count(logits, "text")
        probabilities = 1 / (1 + np.exp(-logits)) if self.multi_label else softmax(logits)
        labels = np.array([self.labels[index] for index in probabilities.argmax(axis=1)], dtype=object)
        return {"probabilities": probabilities.astype(np.float32), "label": labels}

    def _entities(self, logits: np.ndarray, encoding: dict[str, np.ndarray]) -> np.ndarray:
        self._check_label_count(logits, "token")
        probabilities = softmax(logits)
        found = []
        for row in range(len(logits)):
            tokens = []
            for position, token_id in enumerate(encoding["input_ids"][row]):
                if not encoding["attention_mask"][row, position] or encoding["special_tokens_mask"][row, position]:
                    continue
                best = int(probabilities[row, position].argmax())
                start, end = encoding["offset_mapping"][row, position]
                tokens.append(
                    {
                        "entity": self.labels[best],
                        "score": float(probabilities[row, position, best]),
                        "token": self.tokenizer.convert_ids_to_tokens(int(token_id)),
                        "start": int(start),
                        "end": int(end),
                    }
                )
            found.append(json.dumps(self._group(tokens), ensure_ascii=False))
        return np.array(found, dtype=object)

    def _group(self, tokens: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adjacent tokens of one entity merged (a B- label starts a new one); "O" is left out."""
        groups: list[list[dict[str, Any]]] = []
        for token in tokens:
            prefix, entity = _tag(token["entity"])
            if groups and prefix != "B" and _tag(groups[-1][-1]["entity"])[1] == entity:
                groups[-1].append(token)
            else:
                groups.append([token])
        entities = []
        for group in groups:
            entity = _tag(group[0]["entity"])[1]
            if entity == "O":
                continue
            entities.append(
                {
                    "entity": entity,
                    "score": float(np.mean([token["score"] for token in group])),
                    "word": self.tokenizer.convert_tokens_to_string([token["token"] for token in group]),
                    "start": group[0]["start"],
                    "end": group[-1]["end"],
                }
            )
        return entities
