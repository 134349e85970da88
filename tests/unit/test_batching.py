"""The adaptive batcher with a fake model that records the batches it ran."""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import uvloop
from prometheus_client import REGISTRY

from tandem.batching import FULL, IDLE, MAX_WAIT, QUEUE_EMPTY, AdaptiveBatcher, CallCost
from tandem.card import ModelCard
from tandem.protocol import InferenceError
from tandem.runtime import Model


class Doubler(Model):
    """y = 2x; a row holding a negative number is bad input, like a corrupt image."""

    def __init__(self, fail: bool = False):
        card = {
            "name": "doubler",
            "version": "1",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}],
        }
        super().__init__(Path("."), ModelCard.parse(card, "doubler"))
        self.batches: list[tuple[int, ...]] = []
        self.fail = fail

    def run(self, inputs, outputs):
        self.batches.append(inputs["x"].shape)
        if self.fail:
            raise RuntimeError("the model broke")
        if (inputs["x"] < 0).any():
            raise InferenceError("negative input")
        return {"y": inputs["x"] * 2}


async def predict_all(batcher: AdaptiveBatcher, requests: list[np.ndarray]) -> list[np.ndarray]:
    results = await asyncio.gather(*(batcher.predict({"x": x}, ["y"]) for x in requests))
    return [result["y"] for result in results]


def closed(labels: tuple[str, str], reason: str) -> float:
    """tandem_batches_total of the model version for `reason` (0 before the first)."""
    value = REGISTRY.get_sample_value(
        "tandem_batches_total", {"model": labels[0], "version": labels[1], "reason": reason}
    )
    return value or 0.0


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows():
    model = Doubler()
    labels = ("sharing", "1")
    # inline_below=0: in a worker thread, as a heavy model runs, so requests queue while a batch runs.
    batcher = AdaptiveBatcher(model, labels, max_batch_size=4, max_wait=0.05, inline_below=0.0)
    requests = [np.full((1, 3), n, np.float32) for n in range(10)]
    results = asyncio.run(predict_all(batcher, requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result, request * 2)
    assert max(shape[0] for shape in model.batches) == 4
    assert sum(shape[0] for shape in model.batches) == 10
    # 4 + 4 rows closed full; the last 2 closed when nothing more was queued (no cost measured yet: no waiting).
    assert (closed(labels, FULL), closed(labels, QUEUE_EMPTY), closed(labels, MAX_WAIT)) == (2, 1, 0)


def test_the_fixed_cost_of_a_call_is_fitted_from_calls_of_different_sizes():
    cost = CallCost()
    for _ in range(3):
        cost.add(4, 0.004)
    assert cost.fixed == 0.0  # calls of one size cannot tell the fixed cost from the cost per row
    for rows in (1, 2, 4, 8, 16, 3):
        cost.add(rows, 0.002 + 0.0005 * rows)
    assert cost.fixed == pytest.approx(0.002, rel=1e-6)


def test_a_batch_waits_for_company_when_a_call_costs_more_than_the_gap_between_requests():
    model = Doubler()
    labels = ("waiting", "1")
    batcher = AdaptiveBatcher(model, labels, max_batch_size=2, max_wait=3600)
    # As measured on a model with a large fixed cost (10 s a call) under requests a millisecond apart.
    batcher.cost.add(1, 10.0)
    batcher.cost.add(2, 10.0)
    batcher.gap = 0.001

    async def scenario() -> list[dict]:
        first = asyncio.create_task(batcher.predict({"x": np.full((1, 2), 1, np.float32)}, ["y"]))
        await asyncio.sleep(0.01)  # the batch of the first request is waiting now
        second = asyncio.create_task(batcher.predict({"x": np.full((1, 2), 2, np.float32)}, ["y"]))
        return await asyncio.wait_for(asyncio.gather(first, second), 30)

    first, second = asyncio.run(scenario())
    np.testing.assert_array_equal(first["y"], [[2, 2]])
    np.testing.assert_array_equal(second["y"], [[4, 4]])
    assert model.batches == [(2, 2)]
    assert closed(labels, FULL) == 1


def test_a_batch_that_waits_gives_up_after_max_wait():
    model = Doubler()
    labels = ("waited-out", "1")
    batcher = AdaptiveBatcher(model, labels, max_batch_size=8, max_wait=0.01)
    batcher.cost.add(1, 10.0)
    batcher.cost.add(2, 10.0)
    batcher.gap = 0.001

    result = asyncio.run(asyncio.wait_for(batcher.predict({"x": np.ones((1, 2), np.float32)}, ["y"]), 30))
    np.testing.assert_array_equal(result["y"], [[2, 2]])
    assert closed(labels, MAX_WAIT) == 1


def test_a_batch_does_not_wait_when_requests_come_further_apart_than_a_call_costs():
    model = Doubler()
    labels = ("not-waiting", "1")
    # An hour of max_wait: were the request held for company, wait_for would give up long before.
    batcher = AdaptiveBatcher(model, labels, max_batch_size=8, max_wait=3600)
    batcher.cost.add(1, 0.0011)
    batcher.cost.add(2, 0.0012)  # a fixed cost of 1 ms
    batcher.gap = 0.5

    result = asyncio.run(asyncio.wait_for(batcher.predict({"x": np.ones((1, 2), np.float32)}, ["y"]), 30))
    np.testing.assert_array_equal(result["y"], [[2, 2]])
    assert closed(labels, QUEUE_EMPTY) == 1


def test_a_lone_caller_does_not_wait_for_company():
    model = Doubler()
    # An hour of max_wait: were a lone request held for company, wait_for would give up long before.
    batcher = AdaptiveBatcher(model, ("m", "1"), max_batch_size=8, max_wait=3600)

    async def one_at_a_time() -> None:
        for n in range(3):
            result = await asyncio.wait_for(batcher.predict({"x": np.full((1, 2), n, np.float32)}, ["y"]), 30)
            np.testing.assert_array_equal(result["y"], np.full((1, 2), 2 * n))

    asyncio.run(one_at_a_time())
    assert model.batches == [(1, 2)] * 3


def test_requests_of_different_shapes_run_in_separate_batches():
    model = Doubler()
    batcher = AdaptiveBatcher(model, ("m", "1"), max_batch_size=8, max_wait=0.05, inline_below=0.0)
    requests = [np.full((2, 3), 1, np.float32), np.full((1, 5), 2, np.float32), np.full((1, 3), 3, np.float32)]
    results = asyncio.run(predict_all(batcher, requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result, request * 2)
    assert sorted(model.batches) == [(1, 5), (3, 3)]


def test_a_failing_batch_fails_every_request_in_it():
    batcher = AdaptiveBatcher(Doubler(fail=True), ("m", "1"), max_batch_size=4, max_wait=0.05)

    async def scenario():
        return await asyncio.gather(
            *(batcher.predict({"x": np.ones((1, 2), np.float32)}, ["y"]) for _ in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


def test_one_bad_request_fails_alone_and_its_batch_neighbours_succeed():
    batcher = AdaptiveBatcher(Doubler(), ("m", "1"), max_batch_size=8, max_wait=0.05)

    async def scenario():
        rows = [np.full((1, 2), value, np.float32) for value in (1, -1, 2)]
        return await asyncio.gather(*(batcher.predict({"x": x}, ["y"]) for x in rows), return_exceptions=True)

    first, bad, third = asyncio.run(scenario())
    assert isinstance(bad, InferenceError)
    np.testing.assert_array_equal(first["y"], [[2, 2]])
    np.testing.assert_array_equal(third["y"], [[4, 4]])


def test_a_model_whose_outputs_are_not_batch_major_cannot_batch():
    model = Doubler()
    model.outputs["y"] = model.outputs["y"].__class__("y", "FP32", [3])
    with pytest.raises(ValueError, match="cannot batch"):
        AdaptiveBatcher(model, ("m", "1"), max_batch_size=4, max_wait=0.01)


def test_an_idle_model_cheap_enough_for_the_event_loop_runs_each_request_at_once():
    model = Doubler()
    labels = ("idle", "1")
    # Any call under a second counts as cheap: after its first call (in a thread: its cost is unknown) the model
    # runs on the event loop, where nobody can join its batch.
    batcher = AdaptiveBatcher(model, labels, max_batch_size=8, max_wait=3600, inline_below=1.0)

    async def one_at_a_time() -> None:
        for n in range(3):
            result = await asyncio.wait_for(batcher.predict({"x": np.full((1, 2), n, np.float32)}, ["y"]), 30)
            np.testing.assert_array_equal(result["y"], np.full((1, 2), 2 * n))

    asyncio.run(one_at_a_time())
    assert model.batches == [(1, 2)] * 3
    assert (closed(labels, QUEUE_EMPTY), closed(labels, IDLE)) == (1, 2)
    assert REGISTRY.get_sample_value("tandem_batch_size_count", {"model": "idle", "version": "1"}) == 3


def test_batch_figures_are_prometheus_histograms_and_a_version_loaded_again_goes_on_counting():
    labels = ("figures", "1")
    for _ in range(2):  # a version unloaded and loaded again gets the figures it had
        batcher = AdaptiveBatcher(Doubler(), labels, max_batch_size=8, max_wait=3600)
        batcher.stats.close(FULL)
        batcher.stats.ran(2)  # a bound holds what equals it
        batcher.stats.waited(0.003)
    sample = REGISTRY.get_sample_value
    size = {"model": "figures", "version": "1"}
    assert closed(labels, FULL) == 2 and closed(labels, IDLE) == 0
    assert [sample("tandem_batch_size_bucket", size | {"le": le}) for le in ("1.0", "2.0", "+Inf")] == [0, 2, 2]
    assert (sample("tandem_batch_size_count", size), sample("tandem_batch_size_sum", size)) == (2, 4)
    queued = [sample("tandem_batch_queue_seconds_bucket", size | {"le": le}) for le in ("0.0025", "0.005")]
    assert queued == [0, 2]
    assert sample("tandem_batch_queue_seconds_sum", size) == pytest.approx(0.006)


def test_arrival_gaps_are_measured_below_a_millisecond_on_uvloop():
    """The services run on uvloop, whose loop.time() ticks in whole milliseconds: two requests 0.3 ms apart would
    mostly look simultaneous (a gap of 0), which would make waiting for company look as if it always paid."""

    async def two_arrivals() -> float | None:
        batcher = AdaptiveBatcher(Doubler(), ("gaps", "1"), max_batch_size=8, max_wait=0.001)
        batcher.runner.seconds_per_row = 1e-6  # known to be cheap: each call runs on the loop and returns at once
        await batcher.predict({"x": np.ones((1, 2), np.float32)}, ["y"])
        time.sleep(0.0003)
        await batcher.predict({"x": np.ones((1, 2), np.float32)}, ["y"])
        return batcher.gap

    # The gap includes the first call's own time, so it is at least the sleep; on the millisecond clock it is 0
    # unless a millisecond ends in between.
    gaps = [uvloop.run(two_arrivals()) for _ in range(5)]
    assert all(gap is not None and gap >= 0.0003 for gap in gaps), gaps
