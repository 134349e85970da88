"""One model of each service with an input and the way to check its answer, for the client tests."""

import base64
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tandem.repository import load_version


def digit_png(digit: int) -> bytes:
    image = np.full((80, 60), 255, np.uint8)
    cv2.putText(image, str(digit), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 2.2, 0, 5)
    return cv2.imencode(".png", image)[1].tobytes()


@dataclass
class Case:
    """One model of one service, with an input and the output to compare."""

    service: str
    model: str
    input: str
    datatype: str
    values: np.ndarray
    output: str

    def tensor_values(self, binary: bool) -> np.ndarray:
        if self.datatype == "BYTES" and not binary and isinstance(self.values[0], bytes):
            # JSON carries BYTES as strings: binary content such as an image goes base64-encoded.
            return np.array([base64.b64encode(value).decode() for value in self.values], dtype=object)
        return self.values


CASES = [
    Case(
        "regression",
        "diabetes",
        "input",
        "FP32",
        np.array(
            [
                [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
                [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
            ],
            dtype=np.float32,
        ),
        "variable",
    ),
    Case(
        "nlp", "minilm", "text", "BYTES", np.array(["A man plays a guitar.", "Stocks fell."], dtype=object), "embedding"
    ),
    Case("vision", "digits", "image", "BYTES", np.array([digit_png(3), digit_png(8)], dtype=object), "label"),
]


def expected(case: Case, model_repository: Path) -> np.ndarray:
    """What the model gives in-process, without HTTP or Dapr."""
    runtime = load_version(model_repository / case.model / "1").runtime
    return runtime.predict({case.input: case.values}, [case.output])[case.output]


def compare(got: np.ndarray, want: np.ndarray) -> None:
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(got.reshape(want.shape), want)
