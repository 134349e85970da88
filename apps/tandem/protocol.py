"""Open Inference Protocol v2 (REST): request and response types, their numpy codec, and Triton's
binary tensor extension (a JSON header followed by raw tensor bytes).

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

import json
import math
import struct
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

# OIP datatype -> numpy dtype. BYTES tensors hold Python bytes (binary) or str (JSON) objects.
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
HEADER_LENGTH = "inference-header-content-length"


class InferenceError(Exception):
    """A request the server cannot serve; `status_code` says whose fault it is."""

    status_code = 400

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class ModelNotFound(InferenceError):
    status_code = 404


class ModelUnavailable(InferenceError):
    """The model is known but cannot serve now (it failed to load): 503 with the reason."""

    status_code = 503


def error_body(message: str) -> bytes:
    """The `{"error": "..."}` body of a refusal, byte for byte what FastAPI's JSONResponse renders."""
    return json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode()


class _Message(BaseModel):
    # Fields we do not know are ignored: clients add their own (KServe's sends model_name).
    model_config = ConfigDict(extra="ignore")


class RequestInput(_Message):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None  # absent when the tensor travels as binary data


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
    data: list[Any] | None = None


class InferenceResponse(_Message):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


def index_ready_only(body: bytes) -> bool:
    """Whether a repository index request (`POST /v2/repository/index`, body `{"ready": true}` or empty) asks for
    the ready models alone."""
    try:
        options = json.loads(body) if body.strip() else {}
    except ValueError:
        raise InferenceError('repository index body must be JSON, e.g. {"ready": true}') from None
    return isinstance(options, dict) and options.get("ready") is True


def decode_request(body: bytes, header_length: str | None = None) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    """Parses a request body (JSON, or JSON header + binary tensors) into the request and its input arrays."""
    header, binary = _split(body, header_length)
    try:
        request = InferenceRequest.model_validate_json(header)
    except ValidationError as error:
        raise _request_error(error) from None
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InferenceError(f"input '{tensor.name}' is given twice")
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InferenceError(f"input '{tensor.name}': binary_data_size {size} runs past the end of the body")
            inputs[tensor.name] = decode_binary(tensor, binary[offset : offset + size])
            offset += size
        else:
            inputs[tensor.name] = decode_input(tensor)
    if offset != len(binary):
        raise InferenceError(f"{len(binary) - offset} bytes of binary data belong to no input")
    return request, inputs


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InferenceError(f"Inference-Header-Content-Length {header_length!r} does not fit a {len(body)}-byte body")
    return body[: int(header_length)], body[int(header_length) :]


def _request_error(error: ValidationError) -> InferenceError:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return InferenceError(f"request body is not valid JSON: {first['msg']}", 400)
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return InferenceError(f"invalid inference request at '{where}': {first['msg']}", 422)


def tensor_dtype(tensor: RequestInput) -> np.dtype:
    """The numpy dtype of a tensor's OIP datatype, refusing unknown datatypes and negative dimensions."""
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InferenceError(f"input '{tensor.name}': unknown datatype '{tensor.datatype}'; one of {sorted(DATATYPES)}")
    if any(dim < 0 for dim in tensor.shape):
        raise InferenceError(f"input '{tensor.name}': shape {tensor.shape} has a negative dimension")
    return dtype


def decode_input(tensor: RequestInput) -> np.ndarray:
    """Turns one JSON tensor into a numpy array of its shape; `data` may be flat or nested."""
    dtype = tensor_dtype(tensor)
    if tensor.data is None:
        raise InferenceError(f"input '{tensor.name}' has neither data nor binary_data_size")
    where = f"input '{tensor.name}'"
    try:
        # Integers go through Python ints: numpy would read 2**64-1 as a float and lose it.
        raw = np.asarray(tensor.data, dtype=object if dtype.kind in "Oiu" else None)
    except ValueError:
        raise InferenceError(f"{where}: data is ragged; rows must have equal lengths") from None
    expected = math.prod(tensor.shape)
    if raw.size != expected:
        raise InferenceError(f"{where}: shape {tensor.shape} needs {expected} values, data has {raw.size}")
    return _cast(raw, dtype, tensor.datatype, where).reshape(tensor.shape)


def _cast(raw: np.ndarray, dtype: np.dtype, datatype: str, where: str) -> np.ndarray:
    """Casts JSON values to the datatype, refusing anything that would change a value silently."""
    if dtype.kind == "O":
        if not all(isinstance(item, str) for item in raw.flat):
            raise InferenceError(f"{where}: BYTES data must be strings")
        return raw
    if dtype.kind in "iu":
        if not all(isinstance(item, int) for item in raw.flat):
            raise InferenceError(f"{where}: data is not {datatype}: expected integers")
        limits = np.iinfo(dtype)
        if raw.size and (min(raw.flat) < limits.min or max(raw.flat) > limits.max):
            raise InferenceError(f"{where}: data is not {datatype}: values outside [{limits.min}, {limits.max}]")
        return np.array(raw.tolist(), dtype=dtype)
    kinds = {"b": "b", "f": "biuf"}[dtype.kind]
    if raw.size and raw.dtype.kind not in kinds:
        expected = {"b": "true/false", "f": "numbers"}[dtype.kind]
        raise InferenceError(f"{where}: data is not {datatype}: expected {expected}")
    try:
        with np.errstate(over="raise"):  # a number too large for the datatype is an error, not an infinity
            return raw.astype(dtype)
    except FloatingPointError:
        raise InferenceError(f"{where}: data is not {datatype}: a value overflows it") from None


def decode_binary(tensor: RequestInput, data: bytes) -> np.ndarray:
    """Turns one tensor of Triton's binary format into a numpy array of its shape."""
    dtype = tensor_dtype(tensor)
    count = math.prod(tensor.shape)
    where = f"input '{tensor.name}'"
    if dtype.kind == "O":
        items = _unpack_bytes(data, where)
        if len(items) != count:
            raise InferenceError(f"{where}: shape {tensor.shape} needs {count} values, binary data has {len(items)}")
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(tensor.shape)
    if len(data) != count * dtype.itemsize:
        raise InferenceError(
            f"{where}: shape {tensor.shape} of {tensor.datatype} needs {count * dtype.itemsize} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(tensor.shape)


def _unpack_bytes(data: bytes, where: str) -> list[bytes]:
    # Each element: a 4-byte little-endian length, then that many bytes.
    items, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InferenceError(f"{where}: BYTES binary data ends inside an element's length")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InferenceError(f"{where}: BYTES binary data ends inside an element")
        items.append(data[offset : offset + length])
        offset += length
    return items


def datatype_of(array: np.ndarray) -> str:
    datatype = "BYTES" if array.dtype.kind == "O" else _DATATYPE_OF.get(array.dtype)
    if datatype is None:
        raise InferenceError(f"dtype {array.dtype} has no OIP datatype", 500)
    return datatype


def encode_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    arrays: dict[str, np.ndarray],
    binary: set[str],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict]:
    """The response body and its headers: JSON, or a JSON header + binary tensors for the names in `binary`.

    Dicts in the field order of `InferenceResponse`, fields that are None left out, serialised by orjson: building
    the pydantic models cost more than the rest of the encoding for a small model."""
    outputs: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for name, array in arrays.items():
        datatype = datatype_of(array)
        output: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if name in binary:
            raw = tensor_bytes(array, datatype)
            output["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            output["data"] = _json_data(array)
        outputs.append(output)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    if parameters is not None:
        response["parameters"] = parameters
    response["outputs"] = outputs
    header = orjson.dumps(response)
    if not tail:
        return header, {"content-type": "application/json"}
    return header + b"".join(tail), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _json_data(array: np.ndarray) -> list[Any]:
    if array.dtype.kind == "O":
        return [
            item.decode("utf-8", "backslashreplace") if isinstance(item, bytes) else str(item) for item in array.flat
        ]
    return array.ravel().tolist()


def tensor_bytes(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's elements as binary data: little-endian, row-major; a BYTES element as its 4-byte length and bytes."""
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts = []
    for item in array.flat:
        raw = item if isinstance(item, bytes) else str(item).encode()
        parts += [struct.pack("<I", len(raw)), raw]
    return b"".join(parts)


def binary_outputs(request: InferenceRequest, names: list[str]) -> set[str]:
    """The outputs to send as binary data: all if the request asks so, or those whose output asks for it."""
    default = bool((request.parameters or {}).get("binary_data_output", False))
    asked = {output.name: (output.parameters or {}).get("binary_data", default) for output in request.outputs or []}
    return {name for name in names if asked.get(name, default)}


def encode_request(
    arrays: dict[str, np.ndarray], *, outputs: list[str] | None = None, binary: bool = True
) -> tuple[bytes, dict[str, str]]:
    """A request body for `arrays` and its headers, for a caller of another OIP server: binary tensors (and
    binary outputs asked for) by default, JSON with `binary=False`. `outputs` names the outputs wanted.

    A BYTES tensor of str (as JSON requests give them) stays JSON either way: a server reads a JSON string as text
    or base64, the same bytes in binary as raw content, so only JSON keeps what the string meant."""
    inputs, tail = [], []
    for name, array in arrays.items():
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary and not (datatype == "BYTES" and any(isinstance(item, str) for item in array.flat)):
            raw = tensor_bytes(array, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = _json_data(array)
        inputs.append(entry)
    request: dict[str, Any] = {"inputs": inputs}
    if binary:
        request["parameters"] = {"binary_data_output": True}
    if outputs is not None:
        request["outputs"] = [{"name": name} for name in outputs]
    header = json.dumps(request, separators=(",", ":")).encode()
    if not binary:
        return header, {"content-type": "application/json"}
    return header + b"".join(tail), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def decode_response(body: bytes, header_length: str | None = None) -> tuple[InferenceResponse, dict[str, np.ndarray]]:
    """Parses another OIP server's response body (JSON, or JSON header + binary tensors) into the response and
    its output arrays."""
    header, binary = _split(body, header_length)
    try:
        response = InferenceResponse.model_validate_json(header)
    except ValidationError as error:
        raise InferenceError(f"not an inference response: {error.errors()[0]['msg']}", 502) from None
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for output in response.outputs:
        tensor = RequestInput(**output.model_dump())
        size = (output.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InferenceError(f"output '{output.name}': binary_data_size {size} runs past the end", 502)
            arrays[output.name] = decode_binary(tensor, binary[offset : offset + size])
            offset += size
        else:
            arrays[output.name] = decode_input(tensor)
    return response, arrays
