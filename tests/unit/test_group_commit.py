"""Group commit: batches that arrive while a run is busy go together into the next run, each gets its own result,
and an error of a run reaches every batch it took."""

import asyncio

import pytest

from tandem.group import GroupCommit


def test_batches_that_wait_go_together_into_the_next_run_and_each_gets_its_own_result():
    runs: list[list[int]] = []

    async def scenario() -> list[int]:
        release = asyncio.Event()

        async def run(batches: list[int]) -> list[int]:
            runs.append(batches)
            if len(runs) == 1:
                await release.wait()  # the first run is busy while the others arrive
            return [batch * 10 for batch in batches]

        group: GroupCommit[int, int] = GroupCommit(run)
        first = asyncio.create_task(group.submit(1))
        await asyncio.sleep(0)
        others = [asyncio.create_task(group.submit(batch)) for batch in (2, 3, 4)]
        await asyncio.sleep(0)
        release.set()
        return [await first] + [await task for task in others]

    assert asyncio.run(scenario()) == [10, 20, 30, 40]
    assert runs == [[1], [2, 3, 4]]


def test_an_error_of_a_run_reaches_every_batch_it_took_and_the_next_run_goes_on():
    async def scenario() -> tuple[list[BaseException | int], int]:
        release = asyncio.Event()
        calls = 0

        async def run(batches: list[int]) -> list[int]:
            nonlocal calls
            calls += 1
            if calls == 1:
                await release.wait()
                return batches
            if calls == 2:
                raise RuntimeError("store down")
            return batches

        group: GroupCommit[int, int] = GroupCommit(run)
        first = asyncio.create_task(group.submit(1))
        await asyncio.sleep(0)
        failing = [asyncio.create_task(group.submit(batch)) for batch in (2, 3)]
        await asyncio.sleep(0)
        release.set()
        outcomes = list(await asyncio.gather(first, *failing, return_exceptions=True))
        return outcomes, await group.submit(4)

    outcomes, later = asyncio.run(scenario())
    assert outcomes[0] == 1
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes[1:])
    assert later == 4


def test_a_quiet_handler_runs_each_batch_at_once():
    async def scenario() -> list[list[str]]:
        runs: list[list[str]] = []

        async def run(batches: list[str]) -> list[str]:
            runs.append(batches)
            return batches

        group: GroupCommit[str, str] = GroupCommit(run)
        for batch in ("a", "b"):
            assert await group.submit(batch) == batch
        return runs

    assert asyncio.run(scenario()) == [["a"], ["b"]]


@pytest.mark.parametrize("count", [1, 5])
def test_every_batch_is_taken_once(count: int):
    async def scenario() -> list[int]:
        taken: list[int] = []

        async def run(batches: list[int]) -> list[int]:
            taken.extend(batches)
            await asyncio.sleep(0.001)
            return batches

        group: GroupCommit[int, int] = GroupCommit(run)
        await asyncio.gather(*(group.submit(batch) for batch in range(count * 10)))
        return taken

    assert sorted(asyncio.run(scenario())) == list(range(count * 10))
