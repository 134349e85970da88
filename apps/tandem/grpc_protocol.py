"""Open Inference Protocol v2 over gRPC: the messages of `grpc_predict_v2.proto` and their numpy codec.

The messages come from the compiled proto (`grpc_predict_v2.binpb`, committed beside it) loaded into a descriptor
pool of their own: tritonclient.grpc and KServe each register the same `inference.*` messages in protobuf's default
pool, and a second registration of one name fails ("duplicate symbol"), so a process holding ours could not also
hold either client. Only names of services and methods travel on the wire, never the pool's.

    python -m tandem.grpc_protocol --compile    compiles the proto again (grpcio-tools) after a change to it
"""

import math
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .protocol import InferenceError, RequestInput, datatype_of, decode_binary, tensor_bytes, tensor_dtype

PROTO = Path(__file__).with_name("grpc_predict_v2.proto")
COMPILED = PROTO.with_suffix(".binpb")
SERVICE = "inference.GRPCInferenceService"

_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(COMPILED.read_bytes()).file:
    _pool.Add(_file)


@cache
def message(name: str) -> Any:
    """The class of message `inference.<name>`."""
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")

# Which field of InferTensorContents holds each datatype (FP16 has none: it travels raw), and the wider numpy type
# its values arrive in (INT8 and INT16 come as int32, so their range is checked before the cast).
_CONTENTS: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}


def decode_request(request: Any) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """The input arrays of a ModelInferRequest (typed contents or raw_input_contents) and the outputs it asks for
    (None: all)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InferenceError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InferenceError(f"input '{tensor.name}' is given twice")
        spec = RequestInput.model_construct(name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype)
        if raw:
            if tensor.HasField("contents"):
                raise InferenceError(f"input '{tensor.name}' has contents beside raw_input_contents: send one of them")
            inputs[tensor.name] = decode_binary(spec, raw[index])
        else:
            inputs[tensor.name] = _decode_contents(spec, tensor.contents)
    wanted = [output.name for output in request.outputs] or None
    return inputs, wanted


def _decode_contents(spec: RequestInput, contents: Any) -> np.ndarray:
    dtype = tensor_dtype(spec)
    where = f"input '{spec.name}'"
    if spec.datatype not in _CONTENTS:
        raise InferenceError(f"{where}: {spec.datatype} has no typed contents; send it in raw_input_contents")
    field, wide = _CONTENTS[spec.datatype]
    values = getattr(contents, field)
    expected = math.prod(spec.shape)
    if len(values) != expected:
        raise InferenceError(f"{where}: shape {spec.shape} needs {expected} values, {field} has {len(values)}")
    if dtype.kind == "O":
        array = np.empty(expected, dtype=object)
        array[:] = list(values)
        return array.reshape(spec.shape)
    array = np.array(values, dtype=wide)
    if dtype != wide and array.size:
        limits = np.iinfo(dtype)
        if array.min() < limits.min or array.max() > limits.max:
            raise InferenceError(f"{where}: data is not {spec.datatype}: values outside [{limits.min}, {limits.max}]")
    return array.astype(dtype, copy=False).reshape(spec.shape)


def encode_response(
    model_name: str, model_version: str, request_id: str, arrays: dict[str, np.ndarray], raw: bool
) -> Any:
    """A ModelInferResponse of `arrays`: in raw_output_contents when `raw` (or when an output has no typed
    contents, FP16), else in each output's typed contents (a response may not mix both)."""
    datatypes = {name: datatype_of(array) for name, array in arrays.items()}
    raw = raw or any(datatype not in _CONTENTS for datatype in datatypes.values())
    response = ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for name, array in arrays.items():
        output = response.outputs.add(name=name, datatype=datatypes[name], shape=array.shape)
        if raw:
            response.raw_output_contents.append(tensor_bytes(array, datatypes[name]))
        elif array.dtype.kind == "O":
            output.contents.bytes_contents.extend(
                item if isinstance(item, bytes) else str(item).encode() for item in array.flat
            )
        else:
            getattr(output.contents, _CONTENTS[datatypes[name]][0]).extend(array.ravel().tolist())
    return response


def compile_proto() -> bytes:
    """The proto compiled by grpcio-tools' protoc: a FileDescriptorSet without source information."""
    import tempfile

    from grpc_tools import protoc  # only to compile, never at run time

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "out.binpb"
        code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={target}", str(PROTO)])
        if code != 0:
            raise RuntimeError(f"protoc failed on {PROTO} with exit status {code}")
        return target.read_bytes()


if __name__ == "__main__":
    if sys.argv[1:] != ["--compile"]:
        sys.exit(__doc__)
    COMPILED.write_bytes(compile_proto())
    print(f"wrote {COMPILED}")
