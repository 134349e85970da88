import json
import struct

import numpy as np
import pytest

from tandem.protocol import (
    InferenceError,
    InferenceRequest,
    RequestInput,
    binary_outputs,
    decode_input,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def tensor(data, shape, datatype="FP32"):
    return RequestInput(name="x", shape=shape, datatype=datatype, data=data)


def test_flat_and_nested_data_decode_to_the_same_array():
    flat = decode_input(tensor([1, 2, 3, 4, 5, 6], [2, 3]))
    nested = decode_input(tensor([[1, 2, 3], [4, 5, 6]], [2, 3]))
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 3)


@pytest.mark.parametrize(
    ("data", "datatype", "dtype"),
    [
        ([True, False], "BOOL", np.bool_),
        ([0, 255], "UINT8", np.uint8),
        ([-(2**63), 2**63 - 1], "INT64", np.int64),
        ([0, 2**64 - 1], "UINT64", np.uint64),
        ([0.5, -1], "FP16", np.float16),
        ([1e300, 2], "FP64", np.float64),
        (["a", "ü"], "BYTES", object),
    ],
)
def test_every_datatype_decodes_from_json(data, datatype, dtype):
    array = decode_input(tensor(data, [2], datatype))
    assert array.dtype == np.dtype(dtype)
    assert array.tolist() == data


@pytest.mark.parametrize(
    ("data", "shape", "datatype", "message"),
    [
        ([1, 2, 3], [2, 2], "FP32", "needs 4 values, data has 3"),
        ([1, 2], [2], "FP33", "unknown datatype 'FP33'"),
        ([1, "two"], [2], "FP32", "data is not FP32"),
        ([[1, 2], [3]], [3], "FP32", "ragged"),
        ([1, 2], [-2], "FP32", "negative dimension"),
        ([300], [1], "UINT8", "values outside [0, 255]"),
        ([1.5], [1], "INT64", "expected integers"),
        ([1], [1], "BOOL", "expected true/false"),
        ([1e39], [1], "FP32", "overflows"),
        ([1], [1], "BYTES", "BYTES data must be strings"),
        (None, [1], "FP32", "neither data nor binary_data_size"),
    ],
)
def test_bad_tensors_are_refused_with_what_was_wrong(data, shape, datatype, message):
    with pytest.raises(InferenceError) as refused:
        decode_input(tensor(data, shape, datatype))
    assert refused.value.status_code == 400
    assert message in str(refused.value)


def binary_request(inputs: list[tuple[str, str, list[int], bytes]], **extra) -> tuple[bytes, str]:
    header = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
            for name, datatype, shape, raw in inputs
        ],
        **extra,
    }
    head = json.dumps(header).encode()
    return head + b"".join(raw for *_, raw in inputs), str(len(head))


def test_binary_tensors_follow_the_json_header():
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    strings = b"".join(struct.pack("<I", len(item)) + item for item in (b"png\x00bytes", b""))
    body, length = binary_request([("x", "FP32", [2, 3], floats.tobytes()), ("s", "BYTES", [2], strings)])
    request, inputs = decode_request(body, length)
    np.testing.assert_array_equal(inputs["x"], floats)
    assert inputs["s"].tolist() == [b"png\x00bytes", b""]
    assert [tensor.name for tensor in request.inputs] == ["x", "s"]


@pytest.mark.parametrize(
    ("raw", "length_delta", "message"),
    [
        (np.zeros(5, np.float32).tobytes(), 0, "needs 24 bytes, got 20"),
        (np.zeros(6, np.float32).tobytes(), 0, None),
        (np.zeros(7, np.float32).tobytes(), 0, "belong to no input"),
    ],
)
def test_binary_sizes_must_add_up(raw, length_delta, message):
    body, length = binary_request([("x", "FP32", [2, 3], raw)])
    if message is None:
        decode_request(body, length)
        return
    header, tail = body[: int(length)], body[int(length) :]
    if "no input" in message:  # the header claims less than the body carries
        header = header.replace(str(len(raw)).encode(), str(24).encode())
        body, length = header + tail, str(len(header))
    with pytest.raises(InferenceError) as refused:
        decode_request(body, length)
    assert message in str(refused.value)


def test_a_header_length_beyond_the_body_is_refused():
    with pytest.raises(InferenceError, match="does not fit"):
        decode_request(b"{}", "99")
    with pytest.raises(InferenceError, match="does not fit"):
        decode_request(b"{}", "-1")


def test_truncated_bytes_elements_are_refused():
    body, length = binary_request([("s", "BYTES", [1], struct.pack("<I", 10) + b"abc")])
    with pytest.raises(InferenceError, match="ends inside an element"):
        decode_request(body, length)


def test_responses_are_json_unless_binary_is_asked_for():
    arrays = {"y": np.arange(6, dtype=np.int64).reshape(3, 2), "label": np.array([b"cat", b"dog", b"x"], dtype=object)}
    body, headers = encode_response("m", None, None, arrays, set())
    assert headers == {"content-type": "application/json"}
    outputs = json.loads(body)["outputs"]
    assert outputs[0] == {"name": "y", "shape": [3, 2], "datatype": "INT64", "data": [0, 1, 2, 3, 4, 5]}
    assert outputs[1]["data"] == ["cat", "dog", "x"]

    body, headers = encode_response("m", None, None, arrays, {"y"})
    header_length = int(headers["inference-header-content-length"])
    header = json.loads(body[:header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 48}
    assert "data" not in header["outputs"][0]
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], np.int64).reshape(3, 2), arrays["y"])


def test_binary_outputs_follow_the_request_and_per_output_choices():
    request = InferenceRequest.model_validate(
        {
            "inputs": [],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "a", "parameters": {"binary_data": False}}],
        }
    )
    assert binary_outputs(request, ["a", "b"]) == {"b"}
    assert binary_outputs(InferenceRequest(inputs=[]), ["a"]) == set()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_request_encoded_for_another_server_decodes_to_the_same_tensors(binary):
    """The client half of the codec: what encode_request writes, decode_request reads back unchanged; a BYTES
    tensor of str stays JSON (its meaning: text or base64), one of bytes goes binary."""
    texts = np.array(["héllo", "aGk="], dtype=object)
    raw = np.empty(2, dtype=object)
    raw[:] = [b"\x00\xff", b"png"]
    arrays = {
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
        "texts": texts,
        "raw": raw,
        "n": np.array([7], np.int64),
    }
    if not binary:
        del arrays["raw"]  # JSON cannot carry arbitrary bytes
    body, headers = encode_request(arrays, outputs=["y"], binary=binary)
    request, decoded = decode_request(body, headers.get("inference-header-content-length"))
    assert [output.name for output in request.outputs] == ["y"]
    for name, array in arrays.items():
        assert decoded[name].dtype == array.dtype and decoded[name].tolist() == array.tolist()
    header = json.loads(body[: int(headers.get("inference-header-content-length", len(body)))])
    sent = {tensor["name"]: tensor for tensor in header["inputs"]}
    assert "data" in sent["texts"]
    if binary:
        assert "binary_data_size" in sent["raw"]["parameters"] and "binary_data_size" in sent["x"]["parameters"]


@pytest.mark.parametrize("binary_outputs", [set(), {"y"}], ids=["json", "binary"])
def test_a_response_decodes_to_the_arrays_it_was_encoded_from(binary_outputs):
    arrays = {"y": np.array([[1.5], [2.5]], np.float32), "label": np.array(["a", "b"], dtype=object)}
    body, headers = encode_response("m", None, None, dict(arrays), binary_outputs)
    response, decoded = decode_response(body, headers.get("inference-header-content-length"))
    assert response.model_name == "m"
    assert decoded["y"].tolist() == arrays["y"].tolist() and decoded["label"].tolist() == ["a", "b"]


def test_a_response_that_is_not_one_is_a_502():
    with pytest.raises(InferenceError, match="not an inference response") as error:
        decode_response(b'{"outputs": "no"}')
    assert error.value.status_code == 502
