"""Open Inference Protocol v2 (REST, JSON): request and response types and their numpy codec.

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
"""

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

# OIP datatype -> numpy dtype. BYTES tensors hold Python bytes/str objects.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


class InferenceError(Exception):
    """A request the server cannot serve; `status_code` says whose fault it is."""

    status_code = 400

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class ModelNotFound(InferenceError):
    status_code = 404


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestOutput(_Message):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(_Message):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(_Message):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


def decode_input(tensor: RequestInput) -> np.ndarray:
    """Turns one request tensor into a numpy array of its shape; `data` may be flat or nested."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InferenceError(f"input '{tensor.name}': unknown datatype '{tensor.datatype}'")
    if any(dim < 0 for dim in tensor.shape):
        raise InferenceError(f"input '{tensor.name}': shape {tensor.shape} has a negative dimension")
    try:
        # A number too large for the datatype is an error, not an infinity.
        with np.errstate(over="raise"):
            array = np.asarray(tensor.data, dtype=dtype)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as error:
        raise InferenceError(f"input '{tensor.name}': data is not {tensor.datatype}: {error}") from None
    expected = math.prod(tensor.shape)
    if array.size != expected:
        raise InferenceError(
            f"input '{tensor.name}': shape {tensor.shape} needs {expected} values, data has {array.size}"
        )
    return array.reshape(tensor.shape)


def encode_output(name: str, array: np.ndarray) -> ResponseOutput:
    datatype = "BYTES" if array.dtype == object else _DATATYPE_OF.get(array.dtype)
    if datatype is None:
        raise InferenceError(f"output '{name}' has dtype {array.dtype}, which OIP cannot carry", 500)
    return ResponseOutput(name=name, shape=list(array.shape), datatype=datatype, data=array.ravel().tolist())
