"""One onnxruntime session per model version, with explicit threads and a warm-up at load."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .protocol import DATATYPES, InferenceError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 for a dimension of any size

    def check(self, array: np.ndarray) -> None:
        if array.dtype != DATATYPES[self.datatype]:
            raise InferenceError(f"input '{self.name}' must be {self.datatype}, got numpy {array.dtype}")
        if len(array.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, array.shape, strict=True)
        ):
            raise InferenceError(f"input '{self.name}' must have shape {self.shape} (-1: any), got {list(array.shape)}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InferenceError(f"input '{self.name}' contains NaN or infinity")


class OnnxModel:
    def __init__(self, path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], intra_op_threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {spec.name: spec for spec in inputs}
        self.outputs = {spec.name: spec for spec in outputs}
        self._warm_up()

    def _warm_up(self) -> None:
        # The first run allocates and plans; pay for it at load, not on a user's request.
        feed = {
            spec.name: np.zeros([1 if dim == -1 else dim for dim in spec.shape], DATATYPES[spec.datatype])
            for spec in self.inputs.values()
        }
        self.session.run(None, feed)

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        missing = self.inputs.keys() - inputs.keys()
        unknown = inputs.keys() - self.inputs.keys()
        if missing or unknown:
            raise InferenceError(
                f"inputs must be {sorted(self.inputs)}; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        for name, array in inputs.items():
            self.inputs[name].check(array)
        names = outputs or list(self.outputs)
        unknown_outputs = set(names) - self.outputs.keys()
        if unknown_outputs:
            raise InferenceError(f"unknown outputs {sorted(unknown_outputs)}; this model has {sorted(self.outputs)}")
        return dict(zip(names, self.session.run(names, inputs), strict=True))
