"""Adaptive batching: requests for one model version that arrive while it is busy run together.

When the model is free, what is queued runs at once; a model cheap enough to run on the event loop (see runner.py)
that is idle runs a request at once, alone, without the hop through the batch worker. A batch waits for more company only when waiting pays: when
the next request is expected (the measured gap between arrivals) sooner than the time its joining saves (the
measured fixed cost of a model call, what running it alone would cost on top of its rows), and never longer than
`max_wait` in all. For a small model on a busy CPU the fixed cost is a few microseconds and requests come tens of
microseconds apart, so it never waits: waiting there only idles the model (bench/results/serving.md). A batch holds
at most `max_batch_size` rows. Requests whose tensors differ in more than the batch dimension run in separate
batches, so every request gets exactly the rows it sent. `tandem_batches_total{reason}` says why each batch closed.
"""

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from .metrics import BATCHES
from .protocol import InferenceError
from .runner import INLINE_BELOW_SECONDS, Runner
from .runtime import Model

# Why a batch closed (the `reason` label of tandem_batches_total).
FULL = "full"  # it reached max_batch_size rows
MAX_WAIT = "max_wait"  # it waited max_wait for company
QUEUE_EMPTY = "queue_empty"  # nothing more was queued, and waiting for more would not pay
IDLE = "idle"  # the model was idle and runs on the event loop: the request ran at once, alone
REASONS = (FULL, MAX_WAIT, QUEUE_EMPTY, IDLE)
# Weight of the newest observation in the averages below: they follow a changing load within tens of requests.
_NEWEST = 0.1


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    future: asyncio.Future
    queued_at: float
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = next(iter(self.inputs.values())).shape[0]

    def signature(self) -> tuple:
        return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(self.inputs.items()))


class CallCost:
    """A model call's CPU time as a line in its rows, `fixed + per_row * rows`, fitted by least squares to the calls
    measured, older ones weighing less. `fixed` is 0 until calls of different sizes tell it apart from `per_row`."""

    def __init__(self) -> None:
        self.weight = self.rows = self.rows_squared = self.seconds = self.rows_seconds = 0.0

    def add(self, rows: int, seconds: float) -> None:
        keep = 1 - _NEWEST
        self.weight = keep * self.weight + 1
        self.rows = keep * self.rows + rows
        self.rows_squared = keep * self.rows_squared + rows * rows
        self.seconds = keep * self.seconds + seconds
        self.rows_seconds = keep * self.rows_seconds + rows * seconds

    @property
    def fixed(self) -> float:
        spread = self.weight * self.rows_squared - self.rows * self.rows
        if spread <= 1e-9 * max(self.weight * self.rows_squared, 1.0):  # every call had the same number of rows
            return 0.0
        per_row = (self.weight * self.rows_seconds - self.rows * self.seconds) / spread
        return max(0.0, (self.seconds - per_row * self.rows) / self.weight)


class AdaptiveBatcher:
    def __init__(
        self,
        model: Model,
        labels: tuple[str, str],
        max_batch_size: int,
        max_wait: float,
        inline_below: float = INLINE_BELOW_SECONDS,
    ):
        batch_major = all(
            spec.shape and spec.shape[0] == -1 for spec in [*model.inputs.values(), *model.outputs.values()]
        )
        if not batch_major:
            raise ValueError(f"model {labels[0]} cannot batch: every input and output needs a first dimension of -1")
        self.model = model
        self.labels = labels
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.runner = Runner(model.run, inline_below)
        self.cost = CallCost()
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        # Seconds between arrivals, averaged; unknown (no company expected) until two requests came.
        self.gap: float | None = None
        # Times from time.perf_counter(): uvloop's loop.time() (the services run on uvloop) ticks in whole
        # milliseconds, so arrivals 0.2 ms apart would look simultaneous and waits under 1 ms would count as 0 or 1.
        self.last_arrival: float | None = None
        self.busy = False  # a batch is being gathered or run
        self.stats = BATCHES.of(*labels, REASONS)

    async def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Runs `inputs` (already checked) in the next batch and returns this request's rows of `outputs`."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._work())
        now = time.perf_counter()
        if self.last_arrival is not None:
            gap = now - self.last_arrival
            self.gap = gap if self.gap is None else self.gap + _NEWEST * (gap - self.gap)
        self.last_arrival = now
        rows = next(iter(inputs.values())).shape[0]
        if not self.busy and self.queue.empty() and self.runner.inline(rows):
            # A model cheap enough for the event loop runs to the end before anyone else can arrive, so nobody could
            # join its batch, and the hop through the worker would cost more than the call (bench/results/hotpath.md).
            self.stats.close(IDLE)
            self.stats.ran(rows)
            self.stats.waited(0.0)
            results = await self.runner(inputs, outputs, rows)
            self.cost.add(rows, self.runner.last_seconds)
            return {name: results[name] for name in outputs}
        pending = _Pending(inputs, loop.create_future(), now)
        self.queue.put_nowait(pending)
        results = await pending.future
        return {name: results[name] for name in outputs}

    async def close(self) -> None:
        """Lets queued requests finish, then stops (used when the model version is unloaded)."""
        await self.queue.join()
        if self.worker is not None:
            self.worker.cancel()

    async def _work(self) -> None:
        while True:
            batch = [await self.queue.get()]
            self.busy = True
            try:
                self.stats.close(await self._gather(batch))
                for group in _groups(batch):
                    await self._run(group)
            finally:
                self.busy = False
                for _ in batch:
                    self.queue.task_done()

    async def _gather(self, batch: list[_Pending]) -> str:
        """Adds queued requests to `batch` (and, when it pays, requests still to come); returns why it closed."""
        deadline = time.perf_counter() + self.max_wait
        rows = batch[0].rows
        while rows < self.max_batch_size:
            if self.queue.empty():
                # Wait for the next request at most as long as its joining saves: the fixed cost of a call.
                saving = self.cost.fixed
                if self.gap is None or self.gap >= saving:
                    return QUEUE_EMPTY
                wait = min(saving, deadline - time.perf_counter())
                if wait <= 0:
                    return MAX_WAIT
                try:
                    pending = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    return MAX_WAIT if time.perf_counter() >= deadline else QUEUE_EMPTY
            else:
                pending = self.queue.get_nowait()
            batch.append(pending)
            rows += pending.rows
        return FULL

    async def _run(self, group: list["_Pending"]) -> None:
        live = [pending for pending in group if not pending.future.done()]  # skip callers that went away
        if not live:
            return
        for pending in live:
            self.stats.waited(time.perf_counter() - pending.queued_at)
        if len(live) == 1:
            inputs = live[0].inputs
        else:
            inputs = {name: np.concatenate([pending.inputs[name] for pending in live]) for name in live[0].inputs}
        rows = sum(pending.rows for pending in live)
        self.stats.ran(rows)
        try:
            results = await self.runner(inputs, list(self.model.outputs), rows)
        except InferenceError as error:
            if len(live) > 1:  # one request's bad data (say, a corrupt image) must not fail its neighbours
                for pending in live:
                    await self._run([pending])
                return
            live[0].future.set_exception(error)
            return
        except Exception as error:  # the model itself broke: every request of the batch gets the failure
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        start = 0
        for pending in live:
            if not pending.future.done():
                pending.future.set_result(
                    {name: array[start : start + pending.rows] for name, array in results.items()}
                )
            start += pending.rows
        self.cost.add(rows, self.runner.last_seconds)


def _groups(batch: list[_Pending]) -> list[list[_Pending]]:
    groups: dict[tuple, list[_Pending]] = {}
    for pending in batch:
        groups.setdefault(pending.signature(), []).append(pending)
    return list(groups.values())
