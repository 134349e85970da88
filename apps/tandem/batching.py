"""Adaptive batching: requests for one model version that arrive while it is busy run together.

When the model is free, what is queued runs at once. Under concurrent load (the last batch held more than one
request) a batch also waits at most `max_wait` for company; a lone caller never waits. A batch holds at most
`max_batch_size` rows. Requests
whose tensors differ in more than the batch dimension run in separate batches, so every request
gets exactly the rows it sent.
"""

import asyncio
from dataclasses import dataclass, field

import numpy as np

from .metrics import BATCH_QUEUE_SECONDS, BATCH_SIZE
from .protocol import InferenceError
from .runtime import Model


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


class AdaptiveBatcher:
    def __init__(self, model: Model, labels: tuple[str, str], max_batch_size: int, max_wait: float):
        batch_major = all(
            spec.shape and spec.shape[0] == -1 for spec in [*model.inputs.values(), *model.outputs.values()]
        )
        if not batch_major:
            raise ValueError(f"model {labels[0]} cannot batch: every input and output needs a first dimension of -1")
        self.model = model
        self.labels = labels
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.worker: asyncio.Task | None = None
        self.last_batch_requests = 0

    async def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Runs `inputs` (already checked) in the next batch and returns this request's rows of `outputs`."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._work())
        pending = _Pending(inputs, loop.create_future(), loop.time())
        self.queue.put_nowait(pending)
        results = await pending.future
        return {name: results[name] for name in outputs}

    async def close(self) -> None:
        """Lets queued requests finish, then stops (used when the model version is unloaded)."""
        await self.queue.join()
        if self.worker is not None:
            self.worker.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            rows = batch[0].rows
            # Waiting for company pays only when company is coming: at concurrency 1 it would add max_wait to
            # every request.
            deadline = loop.time() + (self.max_wait if self.last_batch_requests > 1 else 0.0)
            while rows < self.max_batch_size:
                if self.queue.empty():
                    if loop.time() >= deadline:
                        break
                    try:
                        pending = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    pending = self.queue.get_nowait()
                batch.append(pending)
                rows += pending.rows
            self.last_batch_requests = len(batch)
            try:
                for group in _groups(batch):
                    await self._run(group)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _run(self, group: list["_Pending"]) -> None:
        loop = asyncio.get_running_loop()
        live = [pending for pending in group if not pending.future.done()]  # skip callers that went away
        if not live:
            return
        for pending in live:
            BATCH_QUEUE_SECONDS.labels(*self.labels).observe(loop.time() - pending.queued_at)
        inputs = {name: np.concatenate([pending.inputs[name] for pending in live]) for name in live[0].inputs}
        BATCH_SIZE.labels(*self.labels).observe(sum(pending.rows for pending in live))
        try:
            results = await asyncio.to_thread(self.model.run, inputs, list(self.model.outputs))
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


def _groups(batch: list[_Pending]) -> list[list[_Pending]]:
    groups: dict[tuple, list[_Pending]] = {}
    for pending in batch:
        groups.setdefault(pending.signature(), []).append(pending)
    return list(groups.values())
