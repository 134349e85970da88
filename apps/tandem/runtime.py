"""Model runtimes: a loaded model version is a small class with named tensors and `predict()`.

`OnnxModel` serves a model.onnx with one onnxruntime session. A model that needs more than one
graph or code around it (OCR, face detection, text models) names its own class in model.yaml
(`runtime: "vision.ocr:OcrModel"`), a subclass of `Model` built the same way.
"""

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .protocol import DATATYPES, InferenceError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 for a dimension of any size

    @classmethod
    def from_card(cls, entry: dict[str, Any]) -> "TensorSpec":
        return cls(entry["name"], entry["datatype"], list(entry["shape"]))

    def check(self, array: np.ndarray) -> None:
        if array.dtype != DATATYPES[self.datatype]:
            raise InferenceError(f"input '{self.name}' must be {self.datatype}, got numpy {array.dtype}")
        if len(array.shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, array.shape, strict=True)
        ):
            raise InferenceError(f"input '{self.name}' must have shape {self.shape} (-1: any), got {list(array.shape)}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InferenceError(f"input '{self.name}' contains NaN or infinity")


class Model:
    """A loaded model version. Subclasses load in `__init__` and implement `run()`."""

    def __init__(self, folder: Path, card: dict[str, Any], intra_op_threads: int = 1):
        self.folder = folder
        self.card = card
        self.intra_op_threads = intra_op_threads
        self.inputs = {spec.name: spec for spec in map(TensorSpec.from_card, card["inputs"])}
        self.outputs = {spec.name: spec for spec in map(TensorSpec.from_card, card["outputs"])}

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Checks the inputs against the card, runs the model, returns the outputs asked for (all by default)."""
        names = self.check(inputs, outputs)
        results = self.run(inputs, names)
        return {name: results[name] for name in names}

    def check(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[str]:
        """Refuses inputs that do not match the card; returns the names of the outputs to compute."""
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
        return names

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Computes `outputs` from checked `inputs`."""
        raise NotImplementedError


def onnx_session(path: Path, intra_op_threads: int) -> ort.InferenceSession:
    """An onnxruntime session with explicit threads: one model must not take every core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(Model):
    def __init__(self, folder: Path, card: dict[str, Any], intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.session = onnx_session(folder / card.get("artefact", "model.onnx"), intra_op_threads)
        self._warm_up()

    def _warm_up(self) -> None:
        # The first run allocates and plans; pay for it at load, not on a user's request.
        feed = {
            spec.name: np.zeros([1 if dim == -1 else dim for dim in spec.shape], DATATYPES[spec.datatype])
            for spec in self.inputs.values()
        }
        self.session.run(None, feed)

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self.session.run(outputs, inputs), strict=True))


def runtime_class(card: dict[str, Any]) -> type[Model]:
    """The class named by the card's `runtime` ("module:Class"), OnnxModel when it names none."""
    name = card.get("runtime")
    if not name:
        return OnnxModel
    module, _, attribute = name.partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise TypeError(f"runtime {name} is not a tandem.runtime.Model")
    return cls
