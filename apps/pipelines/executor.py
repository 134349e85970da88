"""The in-request executor: runs a compiled graph, each step as soon as every tensor it needs exists (steps that
do not need each other run concurrently), each model call under the step's deadline, retried as the step says.

The step logic (`when`, `forEach`, gathering, onError) lives here once; the durable executor (durable.py) calls
the same functions from its activities.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from prometheus_client import Histogram

from tandem.protocol import DATATYPES, InferenceError

from .expressions import ExpressionError
from .graph import CompiledStep, Graph
from .models import StepCallError
from .runs import Run, StepRecord

STEP_SECONDS = Histogram(
    "tandem_pipeline_step_seconds",
    "Time of one pipeline step, by outcome (ok, skipped, failed, default)",
    ["pipeline", "step", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
# Calls one model: (model, version, inputs, timeout) -> outputs, or raises StepCallError.
ModelCall = Callable[[str, str | None, dict[str, np.ndarray], float], Awaitable[dict[str, np.ndarray]]]


class StepFailed(Exception):
    """A step failed and its onError says fail: the run fails with `status`."""

    def __init__(self, step: str, model: str, message: str, status: int):
        super().__init__(f"step '{step}' (model {model}) failed: {message}")
        self.step = step
        self.status = status


class StepSkipped(Exception):
    """The step does not run: its condition is false, or a tensor it needs was never made."""


def gather_inputs(step: CompiledStep, tensors: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The model inputs of each call the step makes: one, or one per element of its forEach.
    Raises StepSkipped when the step must not run, ExpressionError when its condition cannot be decided."""
    needed = {ref for ref in step.spec.inputs.values() if ref != "$item"}
    if step.spec.for_each is not None:
        needed.add(step.spec.for_each.over)
    if step.when is not None:
        needed |= step.when.references
    absent = sorted(ref for ref in needed if ref not in tensors)
    if absent:
        raise StepSkipped(f"needs {absent}, which skipped steps did not make")
    if step.when is not None and not step.when.condition(tensors):
        raise StepSkipped(f"condition {step.spec.when!r} is false")
    if step.spec.for_each is None:
        return [{name: tensors[ref] for name, ref in step.spec.inputs.items()}]
    return [
        {name: item if ref == "$item" else tensors[ref] for name, ref in step.spec.inputs.items()}
        for item in items(step, tensors[step.spec.for_each.over])
    ]


def items(step: CompiledStep, over: np.ndarray) -> list[np.ndarray]:
    """The elements a forEach runs over, each as a tensor of one element along the first axis."""
    field = step.spec.for_each.json_field  # type: ignore[union-attr]
    if field is None:
        return [over[index : index + 1] for index in range(over.shape[0])]
    elements = []
    for text in over.flat:
        try:
            listed = json.loads(text)
        except (ValueError, TypeError):
            raise InferenceError(f"step '{step.name}': forEach element is not JSON: {str(text)[:80]!r}") from None
        if not isinstance(listed, list):
            raise InferenceError(f"step '{step.name}': forEach element is JSON but not a list")
        for entry in listed:
            value = entry.get(field) if field and isinstance(entry, dict) else entry
            if field and value is None:
                raise InferenceError(f"step '{step.name}': forEach item has no field '{field}'")
            element = np.empty(1, dtype=object)
            element[0] = value if isinstance(value, str) else json.dumps(value)
            elements.append(element)
    return elements


def gather_outputs(step: CompiledStep, results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A plain step's outputs as they came; a forEach's joined along the first axis, in the items' order."""
    if step.spec.for_each is None:
        return results[0]
    gathered = {}
    for name, tensor in step.outputs.items():
        if results:
            gathered[name] = np.concatenate([result[name] for result in results], axis=0)
        else:
            # No items: an empty tensor of the output's type (a free inner dimension counts as 1).
            shape = [0, *(1 if dim == -1 else dim for dim in tensor.shape[1:])]
            gathered[name] = np.empty(shape, dtype=DATATYPES[tensor.datatype])
    return gathered


async def call_with_retries(step: CompiledStep, inputs: dict[str, np.ndarray], call: ModelCall, record: StepRecord):
    """One model call under the step's deadline, retried with backoff while the failure may pass."""
    retry = step.spec.retry
    for attempt in range(1, retry.attempts + 1):
        record.attempts += 1
        try:
            async with asyncio.timeout(step.spec.timeout):
                return await call(step.spec.model, step.spec.version, inputs, step.spec.timeout)
        except TimeoutError:
            error = StepCallError(f"no answer within {step.spec.timeout:g} s (the step's timeout)", 504, True)
        except StepCallError as failure:
            error = failure
        if not error.retryable or attempt == retry.attempts:
            raise error
        await asyncio.sleep(retry.backoff * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def run_step(step: CompiledStep, tensors: dict[str, np.ndarray], call: ModelCall, record: StepRecord) -> None:
    """Runs one step into `record` (status, inputs, outputs, error); raises StepFailed when the run must fail."""
    started = time.perf_counter()
    record.started = time.time()
    try:
        calls = gather_inputs(step, tensors)
        record.inputs = calls[0] if len(calls) == 1 and step.spec.for_each is None else {"items": len(calls)}
        if len(calls) == 1:  # no task to make for a single call: a chain's steps cost the event loop less
            results = [await call_with_retries(step, calls[0], call, record)]
        else:
            results = await asyncio.gather(*(call_with_retries(step, inputs, call, record) for inputs in calls))
        record.finish("ok", gather_outputs(step, list(results)))
    except StepSkipped as why:
        record.finish("skipped", reason=str(why))
    except (StepCallError, InferenceError, ExpressionError) as error:
        status: int = error.status if isinstance(error, StepCallError) else getattr(error, "status_code", 400)
        on_error = step.spec.on_error
        if step.defaults is not None:
            record.finish("default", dict(step.defaults), reason=str(error))
        elif on_error == "skip":
            record.finish("failed", reason=str(error), skipped=True)
        else:
            record.finish("failed", reason=str(error))
            raise StepFailed(step.name, step.spec.model, str(error), status) from None
    finally:
        record.seconds = time.perf_counter() - started
        STEP_SECONDS.labels(step.pipeline, step.name, record.status).observe(record.seconds)


async def execute(graph: Graph, inputs: dict[str, np.ndarray], call: ModelCall, run: Run) -> dict[str, np.ndarray]:
    """Runs every step of `graph` on `inputs`; returns the pipeline's outputs (those whose steps ran).
    Raises StepFailed when a step fails and its onError says fail; the steps still running are cancelled."""
    tensors: dict[str, np.ndarray] = {f"$input.{name}": array for name, array in inputs.items()}
    waiting = dict(graph.steps)
    running: dict[asyncio.Task, CompiledStep] = {}
    finished: set[str] = set()
    try:
        while waiting or running:
            ready = [step for step in waiting.values() if step.depends <= finished]
            for step in ready:
                del waiting[step.name]
            if len(ready) == 1 and not running:
                # Nothing else can start before this step ends (readiness comes only from finished steps): run it
                # here, without a task of its own, as every step of a chain is run.
                (step,) = ready
                await run_step(step, tensors, call, run.steps[step.name])
                finished.add(step.name)
                tensors.update({f"{step.name}.{out}": array for out, array in run.steps[step.name].arrays.items()})
                continue
            for step in ready:
                running[asyncio.create_task(run_step(step, tensors, call, run.steps[step.name]))] = step
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                step = running.pop(task)
                task.result()  # StepFailed ends the run
                finished.add(step.name)
                tensors.update({f"{step.name}.{out}": array for out, array in run.steps[step.name].arrays.items()})
    finally:
        for task in running:
            task.cancel()
        for name in waiting:
            run.steps[name].finish("skipped", reason="the run failed before it started")
    return pipeline_outputs(graph, tensors)


def pipeline_outputs(graph: Graph, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    results = {}
    for name, (expression, tensor) in graph.outputs.items():
        if expression.references <= tensors.keys():
            try:
                value = expression.evaluate(tensors)
            except ExpressionError as error:
                raise InferenceError(f"output '{name}': {error}") from None
            results[name] = value if tensor.datatype != "BYTES" else value.astype(object)
    return results


def response_parameters(run: Run) -> dict[str, Any]:
    """What the response says of the run: its id and which steps ran, were skipped or failed (comma separated:
    OIP parameters are plain values)."""
    by_status: dict[str, list[str]] = {"ok": [], "skipped": [], "failed": [], "default": []}
    for name, record in run.steps.items():
        by_status.setdefault(record.status, []).append(name)
    return {
        "pipeline_run": run.id,
        "steps_ran": ",".join(by_status["ok"]),
        "steps_skipped": ",".join(by_status["skipped"]),
        "steps_failed": ",".join(by_status["failed"] + by_status["default"]),
        "steps_defaulted": ",".join(by_status["default"]),
    }
