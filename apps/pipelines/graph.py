"""Compiling a Pipeline into a graph: every mapping checked against the models' OIP metadata (names, datatypes,
shapes) before anything runs, the steps in an order that respects their dependencies.

A pipeline that cannot work is refused with a `GraphError` naming the step and the tensor.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tandem.protocol import DATATYPES, InferenceError, datatype_of
from tandem.runtime import TensorSpec

from . import expressions
from .expressions import Expression, ExpressionError
from .spec import DefaultOutputs, Pipeline, Step


class GraphError(ValueError):
    """The pipeline cannot work with the models as they are."""


@dataclass(frozen=True)
class Tensor:
    datatype: str
    shape: tuple[int, ...]  # -1: any size

    @classmethod
    def of(cls, entry: dict[str, Any]) -> "Tensor":
        return cls(entry["datatype"], tuple(entry["shape"]))

    def __str__(self) -> str:
        return f"{self.datatype} {list(self.shape)}"

    def accepts(self, other: "Tensor") -> bool:
        """Whether a tensor of type `other` may be given where this one is wanted."""
        return (
            self.datatype == other.datatype
            and len(self.shape) == len(other.shape)
            and all(-1 in (want, got) or want == got for want, got in zip(self.shape, other.shape, strict=True))
        )

    def json(self, name: str) -> dict[str, Any]:
        return {"name": name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class CompiledStep:
    spec: Step
    model_inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]  # as later steps see them (gathered over the items of a forEach)
    depends: set[str]
    when: Expression | None
    item: Tensor | None  # the type of $item in a forEach
    defaults: dict[str, np.ndarray] | None = None
    pipeline: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Graph:
    pipeline: Pipeline
    inputs: dict[str, Tensor]
    steps: dict[str, CompiledStep]  # in an order where a step comes after every step it needs
    outputs: dict[str, tuple[Expression, Tensor]]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # metadata by "model" or "model/version"

    @property
    def name(self) -> str:
        return self.pipeline.name

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        """Refuses a request's inputs that are not the pipeline's (names, datatypes, shapes) with a 400."""
        missing, unknown = self.inputs.keys() - inputs.keys(), inputs.keys() - self.inputs.keys()
        if missing or unknown:
            raise InferenceError(
                f"pipeline '{self.name}' takes inputs {sorted(self.inputs)}; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}"
            )
        for name, array in inputs.items():
            tensor = self.inputs[name]
            TensorSpec(name, tensor.datatype, list(tensor.shape)).check(array)

    def metadata(self) -> dict[str, Any]:
        """The OIP model metadata of the pipeline."""
        return {
            "name": self.name,
            "versions": [self.pipeline.version],
            "platform": "tandem_pipeline",
            "inputs": [tensor.json(name) for name, tensor in self.inputs.items()],
            "outputs": [tensor.json(name) for name, (_, tensor) in self.outputs.items()],
        }


# Reads a model's OIP metadata ({"inputs": [...], "outputs": [...]}); raises if it cannot be had.
MetadataReader = Callable[[str, str | None], Awaitable[dict[str, Any]]]


async def compile_pipeline(pipeline: Pipeline, read_metadata: MetadataReader) -> Graph:
    """The graph of `pipeline`, its steps' models' metadata read with `read_metadata`."""
    keys = {(step.model, step.version) for step in pipeline.spec.steps}
    models = {key: await read_metadata(*key) for key in sorted(keys, key=str)}
    return build_graph(pipeline, models)


def build_graph(pipeline: Pipeline, models: dict[tuple[str, str | None], dict[str, Any]]) -> Graph:
    """The graph of `pipeline` given each step's model metadata by (model, version)."""
    spec = pipeline.spec
    inputs = {tensor.name: Tensor(tensor.datatype, tuple(tensor.shape)) for tensor in spec.inputs}
    steps_by_name = {step.name: step for step in spec.steps}
    known: dict[str, Tensor] = {f"$input.{name}": tensor for name, tensor in inputs.items()}
    compiled: dict[str, CompiledStep] = {}
    for step in _ordered(spec.steps):
        metadata = models[(step.model, step.version)]
        compiled[step.name] = _compile_step(pipeline, step, metadata, known, steps_by_name, models)
        known.update({f"{step.name}.{name}": tensor for name, tensor in compiled[step.name].outputs.items()})
    outputs = {name: _compile_output(name, text, known, steps_by_name, models) for name, text in spec.outputs.items()}
    return Graph(pipeline, inputs, compiled, outputs, {_key(*key): value for key, value in models.items()})


def _key(model: str, version: str | None) -> str:
    return model if version is None else f"{model}/{version}"


def references_of(step: Step) -> set[str]:
    found = set(step.inputs.values())
    if step.for_each is not None:
        found.add(step.for_each.over)
    if step.when is not None:
        try:
            found |= expressions.parse(step.when).references
        except ExpressionError as error:
            raise GraphError(f"step '{step.name}': when {error}") from None
    return found


def _step_of(reference: str) -> str | None:
    return None if reference.startswith("$") else reference.split(".", 1)[0]


def _ordered(steps: list[Step]) -> list[Step]:
    """The steps, each after those it needs; a cycle or an unknown step is an error naming them."""
    by_name = {step.name: step for step in steps}
    needs: dict[str, set[str]] = {}
    for step in steps:
        needs[step.name] = set()
        for reference in sorted(references_of(step)):
            owner = _step_of(reference)
            if owner is None:
                continue
            if owner not in by_name:
                raise GraphError(f"step '{step.name}': '{reference}' names no step of this pipeline: {sorted(by_name)}")
            if owner == step.name:
                raise GraphError(f"step '{step.name}': '{reference}' is its own output")
            needs[step.name].add(owner)
    ordered: list[Step] = []
    done: set[str] = set()
    while len(ordered) < len(steps):
        ready = [step for step in steps if step.name not in done and needs[step.name] <= done]
        if not ready:
            stuck = sorted(name for name in by_name if name not in done)
            raise GraphError(f"steps {stuck} depend on each other in a cycle")
        ordered += ready
        done |= {step.name for step in ready}
    return ordered


def _describe_missing(reference: str, known: dict[str, Tensor], steps: dict[str, Step], models: dict) -> str:
    if reference.startswith("$input."):
        names = sorted(key.removeprefix("$input.") for key in known if key.startswith("$input."))
        return f"'{reference}': the pipeline has no input '{reference.removeprefix('$input.')}'; its inputs: {names}"
    owner, _, output = reference.partition(".")
    step = steps[owner]
    outputs = [entry["name"] for entry in models[(step.model, step.version)]["outputs"]]
    return f"'{reference}': step '{owner}' (model {step.model}) has no output '{output}'; its outputs: {outputs}"


def _resolve(reference: str, known: dict[str, Tensor], item: Tensor | None, steps: dict, models: dict) -> Tensor:
    if reference == "$item":
        if item is None:
            raise GraphError("'$item' is only defined in a step with forEach")
        return item
    if reference not in known:
        raise GraphError(_describe_missing(reference, known, steps, models))
    return known[reference]


def _compile_step(
    pipeline: Pipeline,
    step: Step,
    metadata: dict[str, Any],
    known: dict[str, Tensor],
    steps: dict[str, Step],
    models: dict,
) -> CompiledStep:
    where = f"step '{step.name}' (model {step.model})"
    model_inputs = {entry["name"]: Tensor.of(entry) for entry in metadata["inputs"]}
    model_outputs = {entry["name"]: Tensor.of(entry) for entry in metadata["outputs"]}
    item = None
    if step.for_each is not None:
        try:
            over = _resolve(step.for_each.over, known, None, steps, models)
        except GraphError as error:
            raise GraphError(f"{where}: forEach {error}") from None
        if step.for_each.json_field is not None:
            if over.datatype != "BYTES":
                raise GraphError(f"{where}: forEach '{step.for_each.over}' is {over}: json needs BYTES (JSON text)")
            item = Tensor("BYTES", (1,))
        elif not over.shape:
            raise GraphError(f"{where}: forEach '{step.for_each.over}' is a scalar: there are no elements to run over")
        else:
            item = Tensor(over.datatype, (1, *over.shape[1:]))
    missing = sorted(model_inputs.keys() - step.inputs.keys())
    if missing:
        raise GraphError(f"{where}: model input(s) {missing} are not mapped; the model takes {sorted(model_inputs)}")
    for name, reference in step.inputs.items():
        if name not in model_inputs:
            raise GraphError(f"{where}: the model has no input '{name}'; its inputs: {sorted(model_inputs)}")
        try:
            given = _resolve(reference, known, item, steps, models)
        except GraphError as error:
            raise GraphError(f"{where} input '{name}': {error}") from None
        if not model_inputs[name].accepts(given):
            raise GraphError(
                f"{where} input '{name}': '{reference}' is {given} but the model takes {model_inputs[name]}"
            )
    when = None
    if step.when is not None:
        when = expressions.parse(step.when)
        if "$item" in when.references:
            raise GraphError(f"{where}: when is decided once for the step, before forEach: it cannot use '$item'")
        tensors = {ref: _resolve(ref, known, item, steps, models) for ref in _named(when, where, known, steps, models)}
        try:
            when.condition(_dummies(tensors, 2))
        except ExpressionError as error:
            raise GraphError(f"{where}: when {error}") from None
    outputs = model_outputs
    if step.for_each is not None:
        scalar = sorted(name for name, tensor in model_outputs.items() if not tensor.shape)
        if scalar:
            raise GraphError(f"{where}: forEach gathers outputs along their first axis; outputs {scalar} are scalars")
        outputs = {name: Tensor(tensor.datatype, (-1, *tensor.shape[1:])) for name, tensor in model_outputs.items()}
    depends = {owner for ref in references_of(step) if (owner := _step_of(ref)) is not None}
    defaults = _defaults(step, where, outputs) if isinstance(step.on_error, DefaultOutputs) else None
    return CompiledStep(step, model_inputs, outputs, depends, when, item, defaults, pipeline.name)


def _named(expression: Expression, where: str, known: dict, steps: dict, models: dict) -> set[str]:
    for reference in expression.references:
        if reference != "$item" and reference not in known:
            owner = _step_of(reference)
            if owner is not None and owner not in steps:
                raise GraphError(f"{where}: '{reference}' names no step of this pipeline: {sorted(steps)}")
            raise GraphError(f"{where}: {_describe_missing(reference, known, steps, models)}")
    return set(expression.references)


def _defaults(step: Step, where: str, outputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    values = step.on_error.default  # type: ignore[union-attr]
    unknown = sorted(values.keys() - outputs.keys())
    if unknown:
        raise GraphError(f"{where}: onError default names outputs {unknown} the model does not have: {sorted(outputs)}")
    missing = sorted(outputs.keys() - values.keys())
    if missing:
        raise GraphError(f"{where}: onError default must give every output; missing {missing}")
    arrays = {}
    for name, value in values.items():
        tensor = outputs[name]
        try:
            array = np.array(value, dtype=DATATYPES[tensor.datatype])
        except (TypeError, ValueError) as error:
            raise GraphError(f"{where}: onError default '{name}' is not {tensor.datatype}: {error}") from None
        if not Tensor(tensor.datatype, array.shape).accepts(tensor):
            raise GraphError(f"{where}: onError default '{name}' has shape {list(array.shape)}, not {tensor}")
        arrays[name] = array
    return arrays


def _compile_output(name: str, text: str, known: dict, steps: dict, models: dict) -> tuple[Expression, Tensor]:
    where = f"output '{name}'"
    try:
        expression = expressions.parse(text)
    except ExpressionError as error:
        raise GraphError(f"{where}: {error}") from None
    if "$item" in expression.references:
        raise GraphError(f"{where}: '$item' is only defined in a step with forEach")
    tensors = {ref: known[ref] for ref in _named(expression, where, known, steps, models)}
    if text.strip() in tensors:
        return expression, tensors[text.strip()]
    # An expression's type: evaluate it on zeros twice, once with each free dimension 2 and once 3; the
    # dimensions that change with them are free in the result too.
    try:
        small, large = (expression.evaluate(_dummies(tensors, size)) for size in (2, 3))
        datatype = datatype_of(small)
    except (ExpressionError, InferenceError) as error:
        raise GraphError(f"{where}: {error}") from None
    if small.ndim != large.ndim:
        raise GraphError(f"{where}: '{text}' has a rank that depends on its inputs' sizes")
    shape = tuple(-1 if a != b else a for a, b in zip(small.shape, large.shape, strict=True))
    return expression, Tensor(datatype, shape)


def _dummies(tensors: dict[str, Tensor], free: int) -> dict[str, np.ndarray]:
    arrays = {}
    for reference, tensor in tensors.items():
        shape = [free if dim == -1 else dim for dim in tensor.shape]
        dtype = DATATYPES[tensor.datatype]
        arrays[reference] = np.full(shape, "", dtype=object) if dtype.kind == "O" else np.zeros(shape, dtype)
    return arrays
