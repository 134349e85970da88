"""Run records: each step's inputs, outputs, status and time, kept for a bounded time and number of runs."""

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tandem.protocol import datatype_of

# Tensors in a run record show their values up to this many elements; bigger ones show datatype and shape.
SHOWN_ELEMENTS = 64


def describe(array: np.ndarray) -> dict[str, Any]:
    entry: dict[str, Any] = {"datatype": datatype_of(array), "shape": list(array.shape)}
    if array.size <= SHOWN_ELEMENTS:
        if array.dtype.kind == "O":
            values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.flat]
            entry["data"] = [
                value if len(value) <= 200 else f"{value[:200]}... ({len(value)} characters)" for value in values
            ]
        else:
            entry["data"] = array.ravel().tolist()
    return entry


@dataclass
class StepRecord:
    model: str
    status: str = "pending"  # then ok, skipped, failed or default (failed, its onError's values used)
    reason: str = ""
    attempts: int = 0
    started: float | None = None
    seconds: float = 0.0
    inputs: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # the outputs

    def finish(
        self, status: str, outputs: dict[str, np.ndarray] | None = None, reason: str = "", skipped: bool = False
    ) -> None:
        self.status, self.reason = status, reason
        self.arrays = outputs or {}
        if skipped:
            self.reason = f"{reason} (onError: skip)"

    def json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "status": self.status,
            "reason": self.reason,
            "attempts": self.attempts,
            "started": self.started,
            "seconds": round(self.seconds, 6),
            "inputs": {
                name: describe(value) if isinstance(value, np.ndarray) else value for name, value in self.inputs.items()
            },
            "outputs": {name: describe(array) for name, array in self.arrays.items()},
        }


@dataclass
class Run:
    pipeline: str
    version: str
    steps: dict[str, StepRecord]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "running"  # then ok or failed
    error: str = ""
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    executor: str = "in-request"
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "version": self.version,
            "executor": self.executor,
            "status": self.status,
            "error": self.error,
            "started": self.started,
            "seconds": round(self.seconds, 6),
            "steps": {name: record.json() for name, record in self.steps.items()},
        }


class RunStore:
    """The newest runs of this process: at most `limit`, none older than `max_age` seconds."""

    def __init__(self, limit: int, max_age: float):
        self.limit = limit
        self.max_age = max_age
        self.runs: OrderedDict[str, Run] = OrderedDict()

    def add(self, run: Run) -> None:
        self.runs[run.id] = run
        self._expire()

    def get(self, run_id: str) -> Run | None:
        self._expire()
        return self.runs.get(run_id)

    def _expire(self) -> None:
        oldest = time.time() - self.max_age
        while self.runs and (len(self.runs) > self.limit or next(iter(self.runs.values())).started < oldest):
            self.runs.popitem(last=False)
