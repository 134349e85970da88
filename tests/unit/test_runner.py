"""Where a model's calls run: inline on the event loop once measured cheap, in a worker thread otherwise."""

import asyncio
import threading

import numpy as np

from tandem.runner import Runner


class ThreadRecorder:
    """y = x + 1, remembering which thread each call ran on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def __call__(self, inputs, outputs):
        self.threads.append(threading.get_ident())
        return {"y": inputs["x"] + 1}


def calls(runner: Runner, count: int) -> int:
    """Runs `count` calls on a fresh loop; returns the loop's thread id."""

    async def scenario() -> int:
        for n in range(count):
            result = await runner({"x": np.full((1, 2), n, np.float32)}, ["y"], 1)
            np.testing.assert_array_equal(result["y"], np.full((1, 2), n + 1))
        return threading.get_ident()

    return asyncio.run(scenario())


def test_the_first_call_runs_in_a_thread_and_a_cheap_model_then_runs_inline():
    model = ThreadRecorder()
    loop_thread = calls(Runner(model, inline_below=1.0), 3)
    assert model.threads[0] != loop_thread
    assert model.threads[1:] == [loop_thread, loop_thread]


def test_a_model_dearer_than_the_threshold_always_runs_in_a_thread():
    model = ThreadRecorder()
    loop_thread = calls(Runner(model, inline_below=0.0), 3)
    assert loop_thread not in model.threads


def test_a_request_of_many_rows_leaves_the_loop_even_for_a_cheap_model():
    model = ThreadRecorder()
    runner = Runner(model, inline_below=1.0)
    calls(runner, 1)
    assert runner.seconds_per_row is not None
    assert runner.inline(1)
    assert not runner.inline(int(2.0 / max(runner.seconds_per_row, 1e-9)))


def test_a_model_that_waits_on_io_is_awaited_on_the_loop():
    threads: list[int] = []

    async def run(inputs, outputs):
        threads.append(threading.get_ident())
        await asyncio.sleep(0)  # what a state-store call would do
        return {"y": inputs["x"] + 1}

    loop_thread = calls(Runner(run), 3)
    assert threads == [loop_thread] * 3  # never a worker thread, not even the first call
