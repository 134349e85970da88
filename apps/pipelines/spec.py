"""The Pipeline resource: a model graph declared in YAML (`pipelines/*.yaml`), as pydantic types.

Its JSON Schema is committed beside the pipelines (`python -m pipelines.spec > pipelines/pipeline.schema.json`),
so editors can check a file as it is written. Mappings name tensors: `$input.<name>` (the pipeline's inputs),
`<step>.<output>` (an earlier step's output) or `$item` (the element of a `forEach` a step runs for).
"""

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tandem.protocol import DATATYPES

API_VERSION = "tandem.dev/v1"
STEP_NAME = r"^[a-z][a-z0-9_]{0,62}$"
PIPELINE_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
# A tensor reference: "$input.<name>", "$item", or "<step>.<output>".
REFERENCE = re.compile(r"^(\$input\.[A-Za-z0-9_.-]+|\$item|[a-z][a-z0-9_]*\.[A-Za-z0-9_.-]+)$")


class PipelineSpecError(ValueError):
    """A pipeline file that cannot be read: the message names the file and what is wrong."""


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored line.
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    datatype: Literal[tuple(DATATYPES)]  # type: ignore[valid-type]
    shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(description="-1 for a dimension of any size")]


class Retry(_Strict):
    """Attempts after a failure that may pass (timeout, unavailable, 429, 5xx); a 4xx is never tried again."""

    attempts: Annotated[int, Field(ge=1, le=20, description="tries in all, the first included")] = 1
    backoff: Annotated[float, Field(ge=0, le=60, description="seconds before the 2nd try, doubled each time")] = 0.1


class DefaultOutputs(_Strict):
    default: Annotated[
        dict[str, Any], Field(description="output name -> value (nested lists), used when the step fails")
    ]


class ForEach(_Strict):
    """Runs the step once per element of a tensor (along its first axis); outputs gathered in order."""

    over: Annotated[str, Field(description="the tensor: '$input.<name>' or '<step>.<output>'")]
    json_field: Annotated[
        str | None,
        Field(
            alias="json",
            description="elements are JSON lists (BYTES): run once per list item, taking this field of it "
            "('' for the item itself)",
        ),
    ] = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("over")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not REFERENCE.match(value) or value == "$item":
            raise ValueError(f"'{value}' is not a tensor reference ('$input.<name>' or '<step>.<output>')")
        return value


def _seconds(value: Any) -> Any:
    """'500ms', '2s', '1m' or a number of seconds."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m)?\s*", value)
        if not match:
            raise ValueError(f"'{value}' is not a duration such as 500ms, 2s or 1m")
        number, unit = float(match[1]), match[2] or "s"
        return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return value


class Step(_Strict):
    name: Annotated[str, Field(pattern=STEP_NAME, description="unique in the pipeline")]
    model: Annotated[str, Field(min_length=1, description="any model a Tandem service serves")]
    version: str | None = None
    inputs: Annotated[dict[str, str], Field(description="model input name -> tensor reference")]
    when: Annotated[
        str | None,
        Field(description="a condition on earlier outputs, e.g. \"any(sentiment.label == 'negative')\""),
    ] = None
    for_each: Annotated[ForEach | None, Field(alias="forEach")] = None
    timeout: Annotated[float, Field(gt=0, description="seconds (or '500ms', '2s') per attempt")] = 30.0
    retry: Retry = Retry()
    on_error: Annotated[
        Literal["fail", "skip"] | DefaultOutputs,
        Field(alias="onError", description="fail the run, skip the step (and those needing it), or default outputs"),
    ] = "fail"

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _timeout_text = field_validator("timeout", mode="before")(classmethod(lambda cls, value: _seconds(value)))

    @field_validator("inputs")
    @classmethod
    def _references(cls, inputs: dict[str, str]) -> dict[str, str]:
        for name, reference in inputs.items():
            if not REFERENCE.match(reference):
                raise ValueError(
                    f"input '{name}': '{reference}' is not a tensor reference ('$input.<name>', '<step>.<output>' "
                    "or '$item')"
                )
        return inputs


class PubSubTrigger(_Strict):
    """Each event on `topic` is one durable run (its data an inference request); results go to `results`."""

    pubsub: str = "pubsub"
    topic: Annotated[str, Field(min_length=1)]
    results: Annotated[str | None, Field(description="topic the run's outputs are published to")] = None


class ScheduleTrigger(_Strict):
    """A durable run on a schedule (Dapr's Jobs API: once per tick, whichever replica gets it)."""

    schedule: Annotated[str, Field(min_length=1, description="'@every 10s', '@daily' or a cron expression")]
    repeats: Annotated[int | None, Field(ge=1, description="fire this many times in all, then stop")] = None
    request: Annotated[dict[str, Any], Field(description="the inference request each run gets")]
    results: str | None = None
    pubsub: str = "pubsub"


class Triggers(_Strict):
    pubsub: list[PubSubTrigger] = []
    schedule: list[ScheduleTrigger] = []


class PipelineSpec(_Strict):
    inputs: Annotated[list[TensorSpec], Field(min_length=1)]
    steps: Annotated[list[Step], Field(min_length=1)]
    outputs: Annotated[
        dict[str, str],
        Field(
            min_length=1,
            description="output name -> tensor reference or expression, e.g. 'mean(ridge.variable, trees.variable)'",
        ),
    ]
    triggers: Triggers = Triggers()

    @model_validator(mode="after")
    def _unique_names(self) -> "PipelineSpec":
        for kind, names in (("step", [s.name for s in self.steps]), ("input", [t.name for t in self.inputs])):
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise ValueError(f"{kind} names must be unique: {twice} appear more than once")
        return self


class Metadata(_Strict):
    name: Annotated[str, Field(pattern=PIPELINE_NAME)]
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")] = "1"
    description: str = ""


class Pipeline(_Strict):
    """One `kind: Pipeline` document."""

    api_version: Annotated[Literal["tandem.dev/v1"], Field(alias="apiVersion")]
    kind: Literal["Pipeline"]
    metadata: Metadata
    spec: PipelineSpec

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version


def parse(text: str, source: str) -> Pipeline:
    """One pipeline from YAML text; `source` names it in errors."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PipelineSpecError(f"{source}: not YAML: {error}") from None
    try:
        return Pipeline.model_validate(document)
    except ValidationError as error:
        problems = [
            f"at '{'.'.join(str(part) for part in problem['loc']) or 'document'}': {problem['msg']}"
            for problem in error.errors()
        ]
        raise PipelineSpecError(f"{source}: " + "; ".join(problems)) from None


def read_folder(folder: Path) -> tuple[dict[str, Pipeline], dict[str, str]]:
    """Every `*.yaml` in `folder`: the pipelines read, and the files refused with why (by file name)."""
    pipelines: dict[str, Pipeline] = {}
    refused: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            pipeline = parse(path.read_text(), path.name)
        except PipelineSpecError as error:
            refused[path.name] = str(error)
            continue
        if pipeline.name in pipelines:
            refused[path.name] = f"{path.name}: pipeline '{pipeline.name}' is already defined by another file"
            continue
        pipelines[pipeline.name] = pipeline
    return pipelines, refused


def json_schema() -> dict[str, Any]:
    schema = Pipeline.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Tandem Pipeline", **schema}


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
