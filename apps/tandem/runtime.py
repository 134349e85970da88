"""Model runtimes: a loaded model version is a small class with named tensors and `predict()`.

`OnnxModel` serves a model.onnx with one onnxruntime session (`runtime: onnx`, the default; scikit-learn models
are converted to it); `runtime: huggingface` is a transformers tokenizer and config over an ONNX graph. A model that
needs more than one graph or code around it (OCR, face detection) names its own class in model.yaml
(`runtime: "vision.runtimes:OcrModel"`), a subclass of `Model` built the same way.
"""

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

from .card import ModelCard, TensorCard
from .protocol import DATATYPES, InferenceError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 for a dimension of any size

    @classmethod
    def from_card(cls, tensor: TensorCard) -> "TensorSpec":
        return cls(tensor.name, tensor.datatype, list(tensor.shape))

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

    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        self.folder = folder
        self.card = card
        self.intra_op_threads = intra_op_threads
        self.inputs = {spec.name: spec for spec in map(TensorSpec.from_card, card.inputs)}
        self.outputs = {spec.name: spec for spec in map(TensorSpec.from_card, card.outputs)}

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
        """Computes `outputs` from checked `inputs` (a subclass may make it `async def` if it waits on I/O)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Frees what the model holds besides memory (a connection, say) when it is unloaded."""


def onnx_session(path: Path, intra_op_threads: int) -> "ort.InferenceSession":
    """An onnxruntime session with explicit threads: one model must not take every core."""
    # Imported here, not with the module: the apps that serve no model (sensors, features, alerts) import the kit
    # too, and onnxruntime is most of its import time (0.8 s of CPU each under qemu-aarch64 on an edge device).
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def sample(spec: TensorSpec) -> np.ndarray:
    """Zeros of the tensor's shape, one for each dimension of any size: what a warm-up or a smoke test sends."""
    return np.zeros([1 if dim == -1 else dim for dim in spec.shape], DATATYPES[spec.datatype])


def _onnx_spec(node: "ort.NodeArg") -> TensorSpec:
    """A graph input or output as a TensorSpec; symbolic and unknown dimensions are -1."""
    datatype = node.type.removeprefix("tensor(").removesuffix(")")
    names = {"float": "FP32", "double": "FP64", "float16": "FP16", "bool": "BOOL", "string": "BYTES"}
    datatype = names.get(datatype, datatype.upper())
    return TensorSpec(node.name, datatype, [dim if isinstance(dim, int) else -1 for dim in node.shape])


def graph_specs(session: "ort.InferenceSession") -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's own inputs and outputs, as a card would state them."""
    return [_onnx_spec(node) for node in session.get_inputs()], [_onnx_spec(node) for node in session.get_outputs()]


def check_card_against_graph(card_specs: dict[str, TensorSpec], graph: list[TensorSpec], kind: str) -> None:
    """Refuses a card whose tensors the graph does not have, or has with another datatype or a contradicting shape."""
    by_name = {spec.name: spec for spec in graph}
    for name, spec in card_specs.items():
        found = by_name.get(name)
        if found is None:
            raise ValueError(f"the card's {kind} {name!r} is not in the ONNX graph, whose {kind} are {sorted(by_name)}")
        shapes_agree = len(found.shape) == len(spec.shape) and all(
            -1 in (want, got) or want == got for want, got in zip(spec.shape, found.shape, strict=True)
        )
        if found.datatype != spec.datatype or not shapes_agree:
            raise ValueError(
                f"the card says {kind} {name!r} is {spec.datatype} {spec.shape}, the ONNX graph says "
                f"{found.datatype} {found.shape}"
            )


class OnnxModel(Model):
    def __init__(self, folder: Path, card: ModelCard, intra_op_threads: int = 1):
        super().__init__(folder, card, intra_op_threads)
        self.session = onnx_session(folder / card.artefact, intra_op_threads)
        graph_inputs, graph_outputs = graph_specs(self.session)
        check_card_against_graph(self.inputs, graph_inputs, "input")
        check_card_against_graph(self.outputs, graph_outputs, "output")
        # The first run allocates and plans; pay for it at load, not on a user's request.
        self.session.run(None, {spec.name: sample(spec) for spec in self.inputs.values()})

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self.session.run(outputs, inputs), strict=True))


BUILT_IN = {"onnx": "tandem.runtime:OnnxModel", "huggingface": "tandem.huggingface:HuggingFaceModel"}


def runtime_class(card: ModelCard) -> type[Model]:
    """The class the card's `runtime` names: a built-in one, or "module:Class"."""
    module, _, attribute = BUILT_IN.get(card.runtime, card.runtime).partition(":")
    try:
        cls = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"runtime {card.runtime!r} cannot be imported: {error}") from None
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ValueError(f"runtime {card.runtime!r} is not a tandem.runtime.Model")
    return cls
