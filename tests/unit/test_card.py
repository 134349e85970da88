"""The model card: every built card validates; a wrong one is refused naming the file, the field and what was
expected; the committed JSON Schema and the README's field list are the card's own.

Bad inputs tried: an unknown field, a misspelt nested field, a wrong datatype, a wrong type (shape as a string),
a missing required field, a dimension below -1, features that do not fit the shape, duplicate tensor names, a
runtime that is neither built in nor module:Class, huggingface without a task, a name that could leave the
repository, YAML that is not a mapping, a name that does not match the folder."""

import re
from pathlib import Path

import pytest
import yaml

from tandem.card import CARD_FILE, CardError, ModelCard, schema_text

ROOT = Path(__file__).resolve().parents[2]
VALID = {
    "name": "iris",
    "version": 1,
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
}


def test_every_built_card_validates(model_repository: Path):
    folders = sorted(card.parent for card in model_repository.glob(f"*/*/{CARD_FILE}"))
    assert len(folders) >= 10
    for folder in folders:
        card = ModelCard.read(folder)
        assert (card.name, card.version) == (folder.parent.name, folder.name)
        assert card.service in ("vision", "nlp", "regression")


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"inptus": []}, ["inptus: unknown field"]),
        ({"tokenizer": {"max_token": 5}}, ["tokenizer.max_token: unknown field"]),
        ({"outputs": [{"name": "label", "datatype": "FP33", "shape": [-1]}]}, ["outputs.0.datatype", "'FP33'"]),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": "-1, 4"}]}, ["inputs.0.shape", "valid list"]),
        ({"inputs": None}, ["inputs"]),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [-2, 4]}]}, ["inputs.0.shape", "-1 (any size)"]),
        (
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3], "features": ["a", "b"]}]},
            ["inputs.0", "2 features need a shape [-1, 2]"],
        ),
        (
            {
                "outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [-1]},
                    {"name": "y", "datatype": "FP32", "shape": [-1]},
                ]
            },
            ["outputs have duplicate names"],
        ),
        ({"runtime": "torchscript"}, ["runtime", "'onnx', 'huggingface'", "'module:Class'"]),
        ({"runtime": "huggingface"}, ["needs a task"]),
        ({"name": "../etc"}, ["name", "should match pattern"]),
    ],
)
def test_a_wrong_card_is_refused_naming_the_file_and_the_field(tmp_path: Path, change: dict, fragments: list[str]):
    folder = tmp_path / "iris" / "1"
    folder.mkdir(parents=True)
    (folder / CARD_FILE).write_text(yaml.safe_dump({**VALID, **change}))
    with pytest.raises(CardError) as refused:
        ModelCard.read(folder)
    assert str(refused.value).startswith(f"{folder / CARD_FILE}: ")
    for fragment in fragments:
        assert fragment in str(refused.value)


def test_a_card_that_is_not_a_mapping_or_names_another_folder_is_refused(tmp_path: Path):
    folder = tmp_path / "iris" / "1"
    folder.mkdir(parents=True)
    (folder / CARD_FILE).write_text("- just\n- a list\n")
    with pytest.raises(CardError, match="must be a mapping of fields"):
        ModelCard.read(folder)
    (folder / CARD_FILE).write_text(yaml.safe_dump({**VALID, "name": "setosa"}))
    with pytest.raises(CardError, match="must match the folder"):
        ModelCard.read(folder)
    (folder / CARD_FILE).unlink()
    with pytest.raises(CardError, match="cannot be read"):
        ModelCard.read(folder)


def test_the_committed_schema_is_the_cards_own():
    committed = (ROOT / "models" / "model-card.schema.json").read_text()
    assert committed == schema_text(), "run `tandem schema > models/model-card.schema.json`"


def test_the_readme_documents_every_field():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The model card") :]
    section = section[: section.index("\n## ", 1)]
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)`", section, re.MULTILINE))
    schema = ModelCard.model_json_schema()
    expected = set(schema["properties"])
    for nested, prefix in (
        ("TensorCard", "inputs."),
        ("TokenizerCard", "tokenizer."),
        ("BatchingCard", "batching."),
        ("Provenance", "provenance."),
    ):
        expected |= {prefix + field for field in schema["$defs"][nested]["properties"]}
    assert expected - documented == set(), "fields missing from the README's model card table"
    assert documented - expected == set(), "the README documents fields the card does not have"
