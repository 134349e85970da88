"""Durable runs' stored tensors: a run resumed after its data expired fails at once, saying why."""

import asyncio

import httpx
import numpy as np
import pytest
from dapr.ext.workflow._durabletask.task import NonRetryableError

from pipelines.durable import DurableExecutor, decode_tensors, encode_tensors
from tandem.sidecar import Sidecar


def executor(stored: dict[str, str]) -> DurableExecutor:
    def state(request: httpx.Request) -> httpx.Response:
        key = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, text=stored[key]) if key in stored else httpx.Response(204)

    sidecar = Sidecar("http://sidecar", transport=httpx.MockTransport(state))
    return DurableExecutor(dict, None, sidecar, "statestore", "pubsub", 3600)  # type: ignore[arg-type]


def test_a_runs_stored_input_is_read_back():
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    found = asyncio.run(executor({"run-1:input": encode_tensors(arrays)})._stored("run-1:input"))
    np.testing.assert_array_equal(decode_tensors(found)["x"], arrays["x"])


def test_a_run_whose_data_expired_fails_at_once_saying_why():
    with pytest.raises(NonRetryableError, match=r"run-1:input is no longer stored: .* kept for 3600 s"):
        asyncio.run(executor({})._stored("run-1:input"))
