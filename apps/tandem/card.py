"""The model card: `model.yaml` beside a model's artefacts, typed and read in this one place.

Every field is documented here (its description is in the committed JSON Schema, `models/model-card.schema.json`,
and in the README). A card that does not validate raises `CardError`, naming the file, the field and what was
expected, so a typo is a clear message instead of a KeyError deep inside a runtime.
"""

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .protocol import DATATYPES

CARD_FILE = "model.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
# Built-in runtimes by name; anything else is "module:Class", a subclass of tandem.runtime.Model.
RUNTIMES = ("onnx", "huggingface")
Task = Literal["text-classification", "feature-extraction", "token-classification"]

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]
assert set(Datatype.__args__) == set(DATATYPES)  # type: ignore[attr-defined]
# YAML reads `version: 1` as a number; a version is a name.
Version = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, int) else value)]


class CardError(Exception):
    """A card that cannot be read or does not validate; the message names the file and every wrong field."""


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt key must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class TensorCard(_Strict):
    """One input or output tensor, as clients see it."""

    name: str = Field(description="The tensor's name in OIP requests and responses.")
    datatype: Datatype = Field(description="OIP datatype: BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES.")
    shape: list[int] = Field(description="Dimensions; -1 for one of any size (the batch, usually the first).")
    description: str = Field("", description="What the tensor holds, for people.")
    content: str = Field("", description="For BYTES tensors: what each element is (e.g. an encoded PNG, JSON).")
    features: list[str] | None = Field(
        None, description="Column names of a [rows, features] table, in order (the people route takes rows by name)."
    )

    @field_validator("shape")
    @classmethod
    def _dimensions(cls, shape: list[int]) -> list[int]:
        if any(dim < -1 for dim in shape):
            raise ValueError(f"dimensions must be -1 (any size) or at least 0, got {shape}")
        return shape

    @model_validator(mode="after")
    def _features_fit(self) -> "TensorCard":
        if self.features is not None and (len(self.shape) != 2 or self.shape[1] not in (-1, len(self.features))):
            raise ValueError(f"{len(self.features)} features need a shape [-1, {len(self.features)}], not {self.shape}")
        return self


class TokenizerCard(_Strict):
    """How text becomes tokens (text models of the nlp service)."""

    file: str = Field("tokenizer.json", description="The tokenizers file beside the card.")
    max_tokens: int = Field(128, ge=1, description="Texts are truncated to this many tokens.")
    max_characters: int = Field(2000, ge=1, description="Longer texts are refused with 400.")
    lowercase: bool = Field(False, description="Whether the tokenizer lowercases, for people.")
    truncation: str = Field("", description="How truncation is done, for people.")
    padding: str = Field("", description="How a batch is padded, for people.")


class BatchingCard(_Strict):
    """Adaptive batching of this model; the service's settings may override it. Off unless max_batch_size > 1."""

    max_batch_size: int = Field(1, ge=1, description="Most requests' rows run together in one call.")
    max_wait_ms: float = Field(2.0, ge=0, description="Longest a request waits for company.")


class Provenance(_Strict):
    """Where the artefacts came from: enough to build the same bytes again or to know what was trusted."""

    recipe: str | None = Field(None, description="The recipe that built the model (models/recipes/...).")
    source: str | None = Field(None, description="The file `tandem add` made the model from.")
    sources_sha256: str | None = Field(None, description="Hash of every source file the recipe may read.")
    seed: int | None = Field(None, description="The random seed of training.")
    packages: dict[str, str] = Field({}, description="Package versions used to build it.")
    python: str | None = Field(None, description="The Python version used to build it.")
    artefacts_sha256: dict[str, str] = Field({}, description="File name -> SHA-256 of every artefact.")
    git_commit: str | None = Field(None, description="The commit of the code that built it.")


class ModelCard(_Strict):
    """`model.yaml`: what a model version is, what it takes and gives, and how it is served."""

    name: str = Field(pattern=NAME_PATTERN, description="The model's name in /v2/models/{name}; its folder's name.")
    version: Version = Field(pattern=NAME_PATTERN, description="The version; its folder's name. The highest serves.")
    description: str = Field("", description="What the model does, for people.")
    service: str | None = Field(
        None,
        description="The Tandem service that serves it (vision, nlp, regression); none: any `tandem serve` of the "
        "repository serves it.",
    )
    runtime: str = Field(
        "onnx",
        description="'onnx' (one onnxruntime session; scikit-learn models are converted to it), 'huggingface' "
        "(transformers tokenizer and config over an ONNX graph), or 'module:Class', a tandem.runtime.Model subclass.",
    )
    task: Task | None = Field(None, description="For 'huggingface': what the graph's outputs mean.")
    platform: str = Field("onnxruntime_onnx", description="The `platform` of the OIP model metadata.")
    artefact: str = Field("model.onnx", description="The main artefact's file name, beside the card.")
    artefacts: dict[str, str] = Field({}, description="Further artefacts by role (e.g. OCR's three graphs).")
    inputs: list[TensorCard] = Field(min_length=1, description="The input tensors.")
    outputs: list[TensorCard] = Field(min_length=1, description="The output tensors.")
    labels: list[str] | None = Field(None, description="Class names, in the order of the model's class indices.")
    preprocessing: str = Field("", description="What is done to inputs before the model sees them, for people.")
    postprocessing: str = Field("", description="What is done to the model's outputs, for people.")
    tokenizer: TokenizerCard | None = Field(None, description="Text models: how text is tokenised.")
    batching: BatchingCard | None = Field(None, description="Adaptive batching; off when absent.")
    parameters: dict[str, Any] = Field(
        {}, description="Settings of the model's runtime (e.g. a detector's thresholds, a window's length)."
    )
    metrics: dict[str, Any] = Field({}, description="Measured quality (accuracy, r2, ...) and on what.")
    data: dict[str, Any] = Field({}, description="The training data: source, hash, sizes.")
    details: dict[str, Any] = Field({}, description="Anything else people should know (architecture, method).")
    provenance: Provenance | None = Field(None, description="How and from what the artefacts were built.")

    @field_validator("runtime")
    @classmethod
    def _runtime_named(cls, runtime: str) -> str:
        if runtime not in RUNTIMES and not re.fullmatch(r"[\w.]+:\w+", runtime):
            raise ValueError(f"must be one of {list(RUNTIMES)} or 'module:Class', got {runtime!r}")
        return runtime

    @model_validator(mode="after")
    def _consistent(self) -> "ModelCard":
        for kind, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [tensor.name for tensor in tensors]
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} have duplicate names: {names}")
        if self.runtime == "huggingface" and self.task is None:
            raise ValueError(f"runtime 'huggingface' needs a task: one of {list(get_args(Task))}")
        return self

    @classmethod
    def read(cls, folder: Path) -> "ModelCard":
        """The card of the model version in `folder`; CardError if it is missing, unreadable or invalid."""
        path = folder / CARD_FILE
        try:
            fields = yaml.safe_load(path.read_text())
        except OSError as error:
            raise CardError(f"{path}: cannot be read: {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise CardError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(fields, dict):
            raise CardError(f"{path}: must be a mapping of fields, got {type(fields).__name__}")
        card = cls.parse(fields, path)
        if (card.name, card.version) != (folder.parent.name, folder.name):
            raise CardError(
                f"{path}: name and version ({card.name!r}, {card.version!r}) must match the folder "
                f"<name>/<version> ({folder.parent.name!r}, {folder.name!r})"
            )
        return card

    @classmethod
    def parse(cls, fields: dict[str, Any], where: Path | str) -> "ModelCard":
        try:
            return cls.model_validate(fields)
        except ValidationError as error:
            raise CardError(f"{where}: {describe(error)}") from None

    def write(self, folder: Path) -> Path:
        path = folder / CARD_FILE
        path.write_text(yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
        return path


def describe(error: ValidationError) -> str:
    """Every problem of a validation error, as 'field: what was expected (got what)'."""
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "the card"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field (a typo? the README lists every field of a model card)"
        elif problem["type"] != "missing" and "input" in problem:
            message += f" (got {problem['input']!r})"
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def schema() -> dict[str, Any]:
    """The card's JSON Schema, as committed in models/model-card.schema.json."""
    return ModelCard.model_json_schema()


def schema_text() -> str:
    return json.dumps(schema(), indent=2) + "\n"
