"""Where a model's calls run: on the event loop when they are cheap, else in a worker thread.

A hop to a worker thread costs the event loop tens of microseconds of CPU (a future, two context switches, a
wake-up): about 45 µs against 9 µs for running the diabetes model itself, measured on the 2-core machine of the
README's "Benchmarks". A heavy model must still run off the loop, or it stalls every other request of the
service. So each call's CPU time is measured, and a call whose expected cost is below `INLINE_BELOW_SECONDS` runs
inline. CPU time of the calling thread, not wall time: waiting for the GIL or for a busy core says nothing about
what the model costs. A model whose `run` is a coroutine (it waits on I/O, e.g. the state store) is awaited on
the loop.
"""

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import numpy as np

Results = dict[str, np.ndarray]
Run = Callable[[dict[str, np.ndarray], list[str]], Results | Awaitable[Results]]

# Below the cost of the thread hop itself: a call this cheap stalls the loop less than the hop would cost it.
INLINE_BELOW_SECONDS = 100e-6
# Weight of the newest call in the average cost per row: a model that turns slow leaves the loop within a few calls.
_NEWEST = 0.2


class Runner:
    """Runs `run(inputs, outputs)` of one model version inline or in a thread, by its measured cost per row."""

    def __init__(self, run: Run, inline_below: float = INLINE_BELOW_SECONDS):
        self.run = run
        self.inline_below = inline_below
        # Unknown until the first call, which therefore runs in a thread: a model is presumed heavy.
        self.seconds_per_row: float | None = None
        self.last_seconds = 0.0  # CPU time of the latest call
        self.awaits = inspect.iscoroutinefunction(run)

    def inline(self, rows: int) -> bool:
        return self.seconds_per_row is not None and self.seconds_per_row * rows < self.inline_below

    async def __call__(self, inputs: dict[str, np.ndarray], outputs: list[str], rows: int) -> Results:
        if self.awaits:
            return await self.run(inputs, outputs)  # type: ignore[misc]
        if self.inline(rows):
            results, seconds = self._timed(inputs, outputs)
        else:
            results, seconds = await asyncio.to_thread(self._timed, inputs, outputs)
        self.last_seconds = seconds
        per_row = seconds / max(rows, 1)
        previous = self.seconds_per_row
        self.seconds_per_row = per_row if previous is None else previous + _NEWEST * (per_row - previous)
        return results

    def _timed(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[Results, float]:
        started = time.thread_time()
        results = self.run(inputs, outputs)
        return results, time.thread_time() - started  # type: ignore[return-value]
