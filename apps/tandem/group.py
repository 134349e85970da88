"""Group commit for event handlers: one run at a time, and each run takes every batch that arrived while the one
before it was busy.

A bulk subscription hands over what collected in its wait window (a few milliseconds), however busy the app is.
Processed one by one, deliveries queue behind each other, and each pays the same fixed cost: the state documents
of every machine it touches read and written whole. Taken together, the deliveries that waited cost one run, so
the busier the app, the larger and cheaper its runs, and a quiet app runs each delivery at once.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

B = TypeVar("B")  # a batch
R = TypeVar("R")  # its result


class GroupCommit(Generic[B, R]):
    def __init__(self, run: Callable[[list[B]], Awaitable[list[R]]]):
        """`run(batches)` processes batches together and returns one result per batch, in their order."""
        self.run = run
        self.waiting: list[tuple[B, asyncio.Future[R]]] = []
        self.worker: asyncio.Task[None] | None = None

    async def submit(self, batch: B) -> R:
        """The batch's result, once a run that took it ended; what the run raised, if it raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.waiting.append((batch, future))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Runs until nothing waits, each run taking everything that waited; in a task of its own, so that each
        submitter waits only for the run that took its batch."""
        while self.waiting:
            taken, self.waiting = self.waiting, []
            try:
                results = await self.run([batch for batch, _ in taken])
            except BaseException as error:
                for _, waiter in taken:
                    if not waiter.done():  # its submitter may have been cancelled meanwhile
                        waiter.set_exception(error)
                if isinstance(error, asyncio.CancelledError):
                    raise
            else:
                for (_, waiter), result in zip(taken, results, strict=True):
                    if not waiter.done():
                        waiter.set_result(result)
