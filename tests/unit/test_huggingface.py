"""The Hugging Face runtime on folders built from the packaged MiniLM weights (tests/huggingface_folders.py), each
task's outputs against a reference computed here with tokenizers, onnxruntime and numpy; card_fields of each folder.

Bad inputs tried: a folder without tokenizer files, without config.json, without an ONNX graph, with a file
onnxruntime cannot load as its graph; a graph whose input is not token ids; a graph whose outputs do not fit the
card's task; an id2label that does not fit the graph's logits; an unknown task and architectures that name none; a
card whose outputs the task does not give; a sentence-transformers module other than pooling and normalisation;
texts too long, not UTF-8, empty, and an empty batch (400, naming the text's index); and a repository holding a
broken Hugging Face folder beside a good one (the broken one is UNAVAILABLE with its reason, the good one serves).
"""

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer

from tandem.card import ModelCard
from tandem.huggingface import HuggingFaceModel, card_fields
from tandem.protocol import InferenceError
from tandem.repository import ModelRepository, load_version
from tandem.runtime import runtime_class

from .. import huggingface_folders as folders

TEXTS = [
    "The striker scored twice in the second half.",
    "I baked a chocolate cake with fresh cream.",
    "My sister lives in New York and works in San Francisco.",
    "Tokenisation handles unicode: café, naïve, 東京, and emoji 🙂.",
    "Hi",
]


def texts(*items) -> np.ndarray:
    """A BYTES tensor as the protocol decodes it: a 1-D object array."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def add_card(folder: Path, task: str | None = None) -> Path:
    """What `tandem add` does: the card from card_fields, written beside the artefacts."""
    ModelCard.parse({"name": folder.parent.name, "version": folder.name, **card_fields(folder, task)}, folder).write(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The three folders, without cards: as a user brings them."""
    root = tmp_path_factory.mktemp("huggingface")
    return {
        "feature-extraction": folders.feature_extraction_folder(root / "embedder"),
        "text-classification": folders.text_classification_folder(root / "topics"),
        "token-classification": folders.token_classification_folder(root / "places"),
    }


@pytest.fixture(scope="module")
def repository(tmp_path_factory, built) -> Path:
    """A repository with each folder as <name>/1 and its card, as `tandem add` leaves it."""
    root = tmp_path_factory.mktemp("repository")
    for name, folder in built.items():
        shutil.copytree(folder, root / name / "1")
        add_card(root / name / "1")
    return root


TASKS = ["feature-extraction", "text-classification", "token-classification"]


@pytest.fixture(scope="module")
def models(repository):
    return {task: load_version(repository / task / "1") for task in TASKS}


def predict(model, *items) -> dict[str, np.ndarray]:
    return model.runtime.predict({"text": texts(*items)})


class Reference:
    """The folder's graph run on tokenizers' own encoding: no transformers, no code of the runtime."""

    def __init__(self, folder: Path, graph: str = "model.onnx", max_tokens: int = 512):
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.session = ort.InferenceSession(str(folder / graph), providers=["CPUExecutionProvider"])

    def run(self, sentences: list[str]) -> tuple[np.ndarray, list]:
        encodings = self.tokenizer.encode_batch(sentences)
        feed = {
            "input_ids": np.array([encoding.ids for encoding in encodings], np.int64),
            "attention_mask": np.array([encoding.attention_mask for encoding in encodings], np.int64),
            "token_type_ids": np.array([encoding.type_ids for encoding in encodings], np.int64),
        }
        return self.session.run(None, feed)[0], encodings


def reference_softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


# --- the three tasks against their references ---


def test_feature_extraction_is_the_mean_of_the_token_vectors_normalised(built, models):
    hidden, encodings = Reference(built["feature-extraction"], max_tokens=256).run(TEXTS)
    mask = np.array([encoding.attention_mask for encoding in encodings], np.float64)[..., None]
    assert (mask == 0).any(), "the batch must contain padding"
    mean = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)

    embedding = predict(models["feature-extraction"], *TEXTS)["embedding"]
    assert embedding.shape == (len(TEXTS), 384) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, expected, rtol=0, atol=1e-6)


def test_feature_extraction_equals_the_minilm_model(models):
    """The folder is all-MiniLM-L6-v2 with its sentence-transformers config: it must embed as the minilm model does."""
    graph, embedding = folders.minilm.encoder_graph()
    minilm_model = folders.minilm.to_model(graph, {embedding: ("embedding", ["batch", 384])}, "minilm")
    expected = folders.minilm.embed(minilm_model, TEXTS)
    np.testing.assert_allclose(predict(models["feature-extraction"], *TEXTS)["embedding"], expected, rtol=0, atol=1e-5)


def test_an_embedding_does_not_depend_on_its_batch(models):
    together = predict(models["feature-extraction"], *TEXTS)["embedding"]
    alone = np.concatenate([predict(models["feature-extraction"], text)["embedding"] for text in TEXTS])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_a_text_longer_than_max_tokens_is_truncated_not_refused(built, models):
    long_text = "word " * 390  # 392 tokens, under the character limit; the card says 256 tokens
    hidden, encodings = Reference(built["feature-extraction"], max_tokens=256).run([long_text])
    assert len(encodings[0].ids) == 256
    mean = hidden.mean(axis=1)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(predict(models["feature-extraction"], long_text)["embedding"], expected, atol=1e-6)


def pooled_by_hand(hidden: np.ndarray, mask: np.ndarray, modes: list[str]) -> np.ndarray:
    """sentence-transformers' pooling, from its documentation: cls, max, mean, mean_sqrt_len concatenated in that order."""
    weights = mask[..., None].astype(np.float64)
    parts = {
        "cls": hidden[:, 0],
        "max": np.where(weights > 0, hidden, -np.inf).max(axis=1),
        "mean": (hidden * weights).sum(axis=1) / weights.sum(axis=1),
        "mean_sqrt_len": (hidden * weights).sum(axis=1) / np.sqrt(weights.sum(axis=1)),
    }
    return np.concatenate([parts[mode] for mode in ["cls", "max", "mean", "mean_sqrt_len"] if mode in modes], axis=1)


@pytest.mark.parametrize(
    ("modes", "normalise"),
    [(["cls"], True), (["max"], False), (["mean_sqrt_len", "cls"], False), (["mean", "max"], True)],
)
def test_the_folder_s_sentence_transformers_pooling_is_followed(tmp_path, built, modes, normalise):
    folder = copy_without(built["feature-extraction"], tmp_path / "pooled" / "1")
    keys = {"cls": "cls_token", "max": "max_tokens", "mean": "mean_tokens", "mean_sqrt_len": "mean_sqrt_len_tokens"}
    pooling = {f"pooling_mode_{key}": mode in modes for mode, key in keys.items()}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    modules = json.loads((folder / "modules.json").read_text())
    if not normalise:
        modules = [module for module in modules if not module["type"].endswith("Normalize")]
    (folder / "modules.json").write_text(json.dumps(modules))
    fields = card_fields(folder)
    assert fields["outputs"][0]["shape"] == [-1, 384 * len(modes)]

    hidden, encodings = Reference(folder, max_tokens=256).run(TEXTS)
    expected = pooled_by_hand(hidden, np.array([encoding.attention_mask for encoding in encodings]), modes)
    if normalise:
        expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    embedding = predict(load_version(add_card(folder)), *TEXTS)["embedding"]
    np.testing.assert_allclose(embedding, expected, rtol=0, atol=1e-5)


def test_a_graph_that_gives_sentence_embedding_is_taken_as_it_is(tmp_path, built, models):
    """What `optimum-cli export onnx` writes for a sentence-transformers model: pooling already in the graph. The
    folder's pooling config (here: cls) must then not be applied again."""
    folder = copy_without(built["feature-extraction"], tmp_path / "exported" / "1", "model.onnx")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    graph, hidden = folders.encoder_graph()
    embedding = folders.minilm.mean_pool_and_normalise(graph, hidden)
    (folder / "model.onnx").write_bytes(
        folders.close_graph(graph, embedding, "sentence_embedding", ["batch", 384]).SerializeToString()
    )
    fields = card_fields(folder)
    assert fields["postprocessing"] == "the graph's own sentence_embedding"
    assert fields["outputs"][0]["shape"] == [-1, 384]

    expected = predict(models["feature-extraction"], *TEXTS)["embedding"]  # mean, normalised: what the graph does
    np.testing.assert_allclose(predict(load_version(add_card(folder)), *TEXTS)["embedding"], expected, atol=1e-6)


def test_an_unsupported_sentence_transformers_module_is_refused(tmp_path, built):
    folder = copy_without(built["feature-extraction"], tmp_path / "dense" / "1")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="module 'sentence_transformers.models.Dense' is not supported") as error:
        card_fields(folder)
    assert str(folder / "modules.json") in str(error.value)


def test_text_classification_is_the_softmax_of_the_logits_with_labels_from_id2label(built, models):
    logits, _ = Reference(built["text-classification"]).run(TEXTS)
    expected = reference_softmax(logits)
    id2label = json.loads((built["text-classification"] / "config.json").read_text())["id2label"]

    results = predict(models["text-classification"], *TEXTS)
    assert results["probabilities"].shape == (len(TEXTS), 2) and results["probabilities"].dtype == np.float32
    np.testing.assert_allclose(results["probabilities"], expected, rtol=0, atol=1e-5)
    assert list(results["label"]) == [id2label[str(index)] for index in expected.argmax(axis=1)]
    assert list(results["label"][:2]) == ["sport", "food"]


def test_a_multi_label_model_gives_a_sigmoid_per_label(tmp_path, built):
    folder = tmp_path / "multi" / "1"
    shutil.copytree(built["text-classification"], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    model = load_version(add_card(folder))
    logits, _ = Reference(folder).run(TEXTS)

    results = predict(model, *TEXTS)
    np.testing.assert_allclose(results["probabilities"], 1 / (1 + np.exp(-logits)), rtol=0, atol=1e-6)
    assert list(results["label"][:2]) == ["sport", "food"]


def reference_entities(text: str, logits: np.ndarray, encoding, labels: list[str]) -> list[dict]:
    """Entities by hand: argmax label per real token; a B- label or a change of entity starts a new one."""
    probabilities = reference_softmax(logits)
    entities: list[dict] = []
    previous = None
    for position, (start, end) in enumerate(encoding.offsets):
        if not encoding.attention_mask[position] or encoding.special_tokens_mask[position]:
            continue
        label = labels[int(probabilities[position].argmax())]
        kind = label.split("-", 1)[-1]
        score = float(probabilities[position].max())
        if kind != "O" and not label.startswith("B-") and previous == kind:
            entities[-1]["end"] = end
            entities[-1]["scores"].append(score)
        elif kind != "O":
            entities.append({"entity": kind, "start": start, "end": end, "scores": [score]})
        previous = kind
    return [
        {
            "entity": entity["entity"],
            "score": float(np.mean(entity["scores"])),
            "word": text[entity["start"] : entity["end"]].lower(),  # the tokenizer lowercases
            "start": entity["start"],
            "end": entity["end"],
        }
        for entity in entities
    ]


def test_token_classification_merges_tokens_of_one_entity(built, models):
    logits, encodings = Reference(built["token-classification"], graph="onnx/model.onnx").run(TEXTS)
    labels = folders.TOKEN_LABELS

    entities = predict(models["token-classification"], *TEXTS)["entities"]
    assert entities.shape == (len(TEXTS),)
    found = [json.loads(item) for item in entities]
    for text, got, row_logits, encoding in zip(TEXTS, found, logits, encodings, strict=True):
        expected = reference_entities(text, row_logits, encoding, labels)
        assert [{**entity, "score": pytest.approx(entity["score"], abs=1e-5)} for entity in expected] == got
    assert [(entity["entity"], entity["word"]) for entity in found[2]] == [
        ("LOC", "new york"),
        ("LOC", "san francisco"),
    ]
    assert [TEXTS[2][entity["start"] : entity["end"]] for entity in found[2]] == ["New York", "San Francisco"]


def test_requests_in_threads_at_once_get_what_they_get_alone(models):
    """Requests run in a thread pool, and they share one tokenizer."""
    model = models["token-classification"]
    batches = [TEXTS[index:] + TEXTS[:index] for index in range(len(TEXTS))] * 4
    alone = [predict(model, *batch)["entities"] for batch in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda batch: predict(model, *batch)["entities"], batches))
    for expected, got in zip(alone, together, strict=True):
        assert list(got) == list(expected)


def test_the_repository_loads_a_huggingface_card_through_its_runtime_name(repository):
    card = ModelCard.read(repository / "text-classification" / "1")
    assert runtime_class(card) is HuggingFaceModel


# --- what `tandem add` writes ---


def test_card_fields_of_a_sentence_transformers_folder(built):
    fields = card_fields(built["feature-extraction"])
    assert (fields["runtime"], fields["task"], fields["artefact"]) == (
        "huggingface",
        "feature-extraction",
        "model.onnx",
    )
    assert [(t["name"], t["datatype"], t["shape"]) for t in fields["inputs"]] == [("text", "BYTES", [-1])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in fields["outputs"]] == [("embedding", "FP32", [-1, 384])]
    assert "labels" not in fields
    # sentence_bert_config.json's max_seq_length, below the tokenizer's 512.
    assert fields["tokenizer"]["max_tokens"] == 256 and fields["tokenizer"]["lowercase"] is True
    assert fields["postprocessing"] == "mean of last_hidden_state over the attention mask, then L2 normalisation"


def test_card_fields_of_a_sequence_classification_folder(built):
    fields = card_fields(built["text-classification"])
    assert (fields["task"], fields["artefact"], fields["labels"]) == (
        "text-classification",
        "model.onnx",
        ["food", "sport"],
    )
    assert [(t["name"], t["datatype"], t["shape"]) for t in fields["outputs"]] == [
        ("probabilities", "FP32", [-1, 2]),
        ("label", "BYTES", [-1]),
    ]
    assert fields["tokenizer"]["max_tokens"] == 512


def test_card_fields_of_a_token_classification_folder_with_its_graph_in_onnx(built):
    fields = card_fields(built["token-classification"])
    assert (fields["task"], fields["artefact"]) == ("token-classification", "onnx/model.onnx")
    assert fields["labels"] == ["O", "B-LOC", "I-LOC"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in fields["outputs"]] == [("entities", "BYTES", [-1])]


def test_every_card_validates_and_names_its_graph_inputs(built):
    for folder in built.values():
        card = ModelCard.parse({"name": "m", "version": "1", **card_fields(folder)}, folder)
        assert card.details["graph"]["inputs"] == dict.fromkeys(
            ["input_ids", "attention_mask", "token_type_ids"], "INT64 [-1, -1]"
        )


def test_a_task_given_overrides_the_architectures(tmp_path, built):
    folder = tmp_path / "masked"
    shutil.copytree(built["feature-extraction"], folder)
    (folder / "modules.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(ValueError, match=r"cannot tell the task from architectures \['BertForMaskedLM'\]") as error:
        card_fields(folder)
    assert str(folder) in str(error.value)

    fields = card_fields(folder, task="feature-extraction")
    assert fields["task"] == "feature-extraction"
    # Without a sentence-transformers config: the mean, not normalised.
    assert fields["postprocessing"] == "mean of last_hidden_state over the attention mask"


# --- bad folders ---


def copy_without(folder: Path, dest: Path, *names: str) -> Path:
    """A copy of `folder` at `dest` (a <name>/<version> folder) without the files `names`."""
    shutil.copytree(folder, dest)
    for name in names:
        (dest / name).unlink()
    return dest


def test_a_folder_without_tokenizer_files_is_refused_naming_the_folder(tmp_path, built):
    folder = copy_without(built["text-classification"], tmp_path / "model" / "1", *folders.TOKENIZER_FILES)
    with pytest.raises(ValueError, match="no tokenizer files") as error:
        card_fields(folder)
    assert str(folder) in str(error.value) and "tokenizer" in str(error.value)


def test_a_card_whose_folder_lost_its_tokenizer_fails_to_load_naming_the_folder(tmp_path, built):
    folder = add_card(copy_without(built["text-classification"], tmp_path / "model" / "1"))
    for name in folders.TOKENIZER_FILES:
        (folder / name).unlink()
    with pytest.raises(ValueError, match="tokenizer") as error:
        load_version(folder)
    assert str(folder) in str(error.value)


def test_a_folder_without_config_json_is_refused(tmp_path, built):
    folder = copy_without(built["text-classification"], tmp_path / "model" / "1", "config.json")
    with pytest.raises(ValueError, match="no config.json") as error:
        card_fields(folder)
    assert str(folder) in str(error.value)


def test_a_folder_without_an_onnx_graph_is_refused(tmp_path, built):
    folder = copy_without(built["text-classification"], tmp_path / "model" / "1", "model.onnx")
    with pytest.raises(ValueError, match="no ONNX graph") as error:
        card_fields(folder)
    assert str(folder) in str(error.value)


def test_a_graph_whose_input_is_not_token_ids_is_refused(tmp_path, built):
    folder = copy_without(built["text-classification"], tmp_path / "model" / "1", "model.onnx")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["logits"])],
        "not_text",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(model, folder / "model.onnx")
    with pytest.raises(ValueError, match=r"inputs \(pixels FP32 \[-1, 2\]\) are not token ids") as error:
        card_fields(folder)
    assert str(folder / "model.onnx") in str(error.value)


def test_a_graph_onnxruntime_cannot_load_is_refused(tmp_path, built):
    folder = copy_without(built["text-classification"], tmp_path / "model" / "1", "model.onnx")
    (folder / "model.onnx").write_bytes(b"not a graph at all")
    with pytest.raises(ValueError, match="not an ONNX graph onnxruntime can load") as error:
        card_fields(folder)
    assert str(folder / "model.onnx") in str(error.value)


def test_an_unknown_task_is_refused(built):
    with pytest.raises(ValueError, match="unknown task 'summarization'") as error:
        card_fields(built["text-classification"], task="summarization")
    assert str(built["text-classification"]) in str(error.value)


def test_a_graph_whose_outputs_do_not_fit_the_task_fails_to_load(tmp_path, built):
    """The sequence classifier's graph gives logits, not the token vectors feature extraction pools."""
    with pytest.raises(ValueError, match=r"outputs \['logits'\] do not fit feature-extraction"):
        card_fields(built["text-classification"], task="feature-extraction")
    folder = add_card(copy_without(built["feature-extraction"], tmp_path / "model" / "1"))
    shutil.copyfile(built["text-classification"] / "model.onnx", folder / "model.onnx")
    with pytest.raises(ValueError, match="do not fit feature-extraction") as error:
        load_version(folder)
    assert str(folder / "model.onnx") in str(error.value)


def test_id2label_that_does_not_fit_the_logits_is_refused(tmp_path, built):
    folder = copy_without(built["text-classification"], tmp_path / "model" / "1")
    fields = card_fields(folder)
    config = json.loads((folder / "config.json").read_text())
    labels = ["food", "sport", "music"]
    id2label = dict(enumerate(labels))
    (folder / "config.json").write_text(json.dumps({**config, "id2label": id2label, "label2id": {}}))
    with pytest.raises(
        ValueError, match="the graph's logits give 2 classes, config.json's id2label has 3 labels"
    ) as error:
        card_fields(folder)
    assert str(folder) in str(error.value)

    # A card that agrees with config.json: the graph still gives two logits.
    fields["labels"], fields["outputs"][0]["shape"] = labels, [-1, 3]
    ModelCard.parse({"name": "model", "version": "1", **fields}, folder).write(folder)
    with pytest.raises(ValueError, match="gives 2 logits per text, config.json's id2label has 3 labels") as error:
        load_version(folder)
    assert str(folder / "model.onnx") in str(error.value)


def test_a_card_asking_for_outputs_the_task_does_not_give_fails_to_load(tmp_path, built):
    folder = add_card(copy_without(built["text-classification"], tmp_path / "model" / "1"))
    fields = card_fields(folder)
    fields["outputs"] = [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    ModelCard.parse({"name": "model", "version": "1", **fields}, folder).write(folder)
    with pytest.raises(ValueError, match="output 'embedding' FP32 is not one text-classification gives") as error:
        load_version(folder)
    assert str(folder / "model.yaml") in str(error.value)


def test_a_broken_folder_is_unavailable_with_its_reason_and_the_others_serve(tmp_path, built):
    root = tmp_path / "repository"
    add_card(copy_without(built["text-classification"], root / "good" / "1"))
    broken = add_card(copy_without(built["text-classification"], root / "broken" / "1"))
    for name in folders.TOKENIZER_FILES:
        (broken / name).unlink()
    repository = ModelRepository(root)
    asyncio.run(repository.load_all())
    states = {entry["name"]: entry for entry in repository.index()}
    assert states["good"]["state"] == "READY"
    assert states["broken"]["state"] == "UNAVAILABLE" and "no tokenizer files" in states["broken"]["reason"]
    assert str(broken) in states["broken"]["reason"]


# --- bad texts ---


@pytest.mark.parametrize("task", TASKS)
def test_a_text_too_long_is_refused_with_400_naming_it(models, task):
    model = models[task]
    limit = model.card.tokenizer.max_characters
    with pytest.raises(InferenceError, match=rf"text\[1\] has {limit + 1} characters; the limit is {limit}") as error:
        predict(model, "fine", "x" * (limit + 1))
    assert error.value.status_code == 400


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ((b"fine", b"\xff\xfe not utf-8"), r"text\[1\] is not valid UTF-8: invalid start byte at byte 0"),
        (("fine", "   "), r"text\[1\] is empty or only whitespace"),
        ((), "'text' holds no text"),
    ],
)
def test_bad_texts_are_refused_with_400(models, items, message):
    with pytest.raises(InferenceError, match=message) as error:
        predict(models["text-classification"], *items)
    assert error.value.status_code == 400


def test_utf8_bytes_are_taken_as_text(models):
    as_bytes = predict(models["text-classification"], *(text.encode() for text in TEXTS))
    as_str = predict(models["text-classification"], *TEXTS)
    np.testing.assert_array_equal(as_bytes["probabilities"], as_str["probabilities"])
