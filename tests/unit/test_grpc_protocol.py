"""The gRPC messages and their numpy codec: the committed compiled proto is the proto's, every datatype goes both
ways in typed contents and raw, and each bad tensor is refused naming what is wrong."""

import subprocess
import sys

import numpy as np
import pytest

from tandem.grpc_protocol import COMPILED, compile_proto, decode_request, encode_response, message
from tandem.protocol import DATATYPES, InferenceError, tensor_bytes

VALUES = {
    "BOOL": [True, False, True, True],
    "UINT8": [0, 1, 254, 255],
    "UINT16": [0, 1, 2, 65535],
    "UINT32": [0, 1, 2, 2**32 - 1],
    "UINT64": [0, 1, 2, 2**64 - 1],
    "INT8": [-128, -1, 0, 127],
    "INT16": [-32768, -1, 0, 32767],
    "INT32": [-(2**31), -1, 0, 2**31 - 1],
    "INT64": [-(2**63), -1, 0, 2**63 - 1],
    "FP16": [0.5, -1.0, 2.0, 65504.0],
    "FP32": [0.5, -1.5, 3.25, 1e30],
    "FP64": [0.5, -1.5, 3.25, 1e300],
    "BYTES": [b"a", b"", "zwölf".encode(), b"\x00\xff"],
}
FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def array_of(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        array = np.empty(4, dtype=object)
        array[:] = VALUES["BYTES"]
        return array.reshape(2, 2)
    return np.array(VALUES[datatype], dtype=DATATYPES[datatype]).reshape(2, 2)


def test_the_committed_compiled_proto_is_the_proto_compiled():
    assert compile_proto() == COMPILED.read_bytes(), "run: python -m tandem.grpc_protocol --compile"


@pytest.mark.parametrize("client", ["tritonclient.grpc", "kserve"])
def test_the_messages_live_beside_the_clients_own(client: str):
    """tritonclient.grpc and KServe each register the same inference.* names in protobuf's default pool (so the two
    cannot share a process); ours are apart. In a fresh interpreter: the tests before may have imported either."""
    script = f"import {client}\nfrom tandem.grpc_protocol import message\nprint(message('ModelInferRequest')(model_name='m').model_name)"
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "m"


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_decodes_from_raw_contents(datatype: str):
    want = array_of(datatype)
    request = message("ModelInferRequest")(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=[2, 2])
    request.raw_input_contents.append(tensor_bytes(want, datatype))
    inputs, wanted = decode_request(request)
    np.testing.assert_array_equal(inputs["x"], want)
    assert inputs["x"].dtype == want.dtype and wanted is None


@pytest.mark.parametrize("datatype", sorted(FIELDS))
def test_every_datatype_with_typed_contents_decodes_from_them(datatype: str):
    want = array_of(datatype)
    request = message("ModelInferRequest")(model_name="m", outputs=[{"name": "y"}])
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[2, 2])
    getattr(tensor.contents, FIELDS[datatype]).extend(want.ravel().tolist())
    inputs, wanted = decode_request(request)
    np.testing.assert_array_equal(inputs["x"], want)
    assert inputs["x"].dtype == want.dtype and wanted == ["y"]


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_every_datatype_encodes_and_reads_back(datatype: str, raw: bool):
    array = array_of(datatype)
    response = encode_response("m", "1", "r", {"y": array}, raw=raw)
    output = response.outputs[0]
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "r")
    assert (output.name, output.datatype, list(output.shape)) == ("y", datatype, [2, 2])
    if raw or datatype == "FP16":  # FP16 has no typed contents: the response goes raw
        assert response.raw_output_contents == [tensor_bytes(array, datatype)]
        assert not output.HasField("contents")
    else:
        assert list(getattr(output.contents, FIELDS[datatype])) == array.ravel().tolist()
        assert not response.raw_output_contents


def _typed(datatype: str, shape: list[int], field: str, values: list) -> object:
    request = message("ModelInferRequest")(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


def _raw(datatype: str, shape: list[int], *chunks: bytes, both: bool = False) -> object:
    request = message("ModelInferRequest")(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    if both:
        tensor.contents.fp32_contents.append(1.0)
    request.raw_input_contents.extend(chunks)
    return request


@pytest.mark.parametrize(
    ("request_", "message_part"),
    [
        (_typed("FP32", [1, 3], "fp32_contents", [1.0, 2.0]), "shape [1, 3] needs 3 values, fp32_contents has 2"),
        (_typed("INT8", [1], "int_contents", [128]), "values outside [-128, 127]"),
        (_typed("UINT16", [1], "uint_contents", [70000]), "values outside [0, 65535]"),
        (_typed("FP16", [1], "fp32_contents", [1.0]), "FP16 has no typed contents"),
        (_typed("FP8", [1], "fp32_contents", [1.0]), "unknown datatype 'FP8'"),
        (_typed("FP32", [-1], "fp32_contents", [1.0]), "negative dimension"),
        (_raw("FP32", [2], b"\0" * 4), "needs 8 bytes, got 4"),
        (_raw("FP32", [1], b"\0" * 4, b"\0" * 4), "raw_input_contents has 2 entries for 1 inputs"),
        (_raw("FP32", [1], b"\0" * 4, both=True), "has contents beside raw_input_contents"),
        (_raw("BYTES", [1], b"\x05\0\0\0ab"), "BYTES binary data ends inside an element"),
    ],
    ids=["count", "int8", "uint16", "fp16", "datatype", "negative", "raw-size", "raw-count", "both", "bytes"],
)
def test_bad_tensors_are_refused_naming_what_is_wrong(request_, message_part: str):
    with pytest.raises(InferenceError) as refused:
        decode_request(request_)
    assert message_part in str(refused.value)
    assert refused.value.status_code == 400


def test_an_input_given_twice_is_refused():
    request = message("ModelInferRequest")(model_name="m")
    for _ in range(2):
        request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InferenceError, match="given twice"):
        decode_request(request)
