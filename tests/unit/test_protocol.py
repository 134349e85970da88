import numpy as np
import pytest

from tandem.protocol import InferenceError, RequestInput, decode_input, encode_output


def tensor(data, shape, datatype="FP32"):
    return RequestInput(name="x", shape=shape, datatype=datatype, data=data)


def test_flat_and_nested_data_decode_to_the_same_array():
    flat = decode_input(tensor([1, 2, 3, 4, 5, 6], [2, 3]))
    nested = decode_input(tensor([[1, 2, 3], [4, 5, 6]], [2, 3]))
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 3)


@pytest.mark.parametrize(
    ("data", "shape", "datatype", "message"),
    [
        ([1, 2, 3], [2, 2], "FP32", "needs 4 values, data has 3"),
        ([1, 2], [2], "FP33", "unknown datatype 'FP33'"),
        ([1, "two"], [2], "FP32", "data is not FP32"),
        ([[1, 2], [3]], [3], "FP32", "data is not FP32"),
        ([1, 2], [-2], "FP32", "negative dimension"),
        ([300], [1], "UINT8", "data is not UINT8"),
    ],
)
def test_bad_tensors_are_refused_with_what_was_wrong(data, shape, datatype, message):
    with pytest.raises(InferenceError) as refused:
        decode_input(tensor(data, shape, datatype))
    assert refused.value.status_code == 400
    assert message in str(refused.value)


def test_outputs_carry_shape_datatype_and_flat_data():
    output = encode_output("y", np.arange(6, dtype=np.int64).reshape(3, 2))
    assert (output.shape, output.datatype, output.data) == ([3, 2], "INT64", [0, 1, 2, 3, 4, 5])
