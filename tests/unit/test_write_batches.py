"""Writes of one kind batched while one is in flight: fewer writes, each caller answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mailflow.store import StoreUnavailable
from mailflow.write_batches import WriteBatches


class Recorder:
    """A write that takes a while, and remembers each batch it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail

    async def write(self, items: Sequence[int]) -> None:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)
        if self.fail:
            raise StoreUnavailable("disk I/O error")


async def test_items_arriving_during_a_write_go_together_in_the_next() -> None:
    recorder = Recorder()
    batches = WriteBatches[int](recorder.write)
    first = asyncio.ensure_future(batches.add(0))
    await asyncio.sleep(0)  # the first write is in flight
    await asyncio.gather(first, *(batches.add(i) for i in range(1, 6)))
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


async def test_when_idle_an_item_is_written_at_once() -> None:
    recorder = Recorder()
    batches = WriteBatches[int](recorder.write)
    for i in range(3):
        await batches.add(i)
    assert recorder.batches == [[0], [1], [2]]


async def test_every_caller_of_a_failed_batch_hears_why() -> None:
    batches = WriteBatches[int](Recorder(fail=True).write)
    outcomes = await asyncio.gather(*(batches.add(i) for i in range(3)),
                                    return_exceptions=True)
    assert [type(o) for o in outcomes] == [StoreUnavailable] * 3


async def test_a_caller_cancelled_leaves_its_batch_to_the_others() -> None:
    recorder = Recorder()
    batches = WriteBatches[int](recorder.write)
    gone = asyncio.ensure_future(batches.add(1))
    stays = asyncio.ensure_future(batches.add(2))
    await asyncio.sleep(0)
    gone.cancel()
    await stays
    assert recorder.batches == [[1, 2]]
    with pytest.raises(asyncio.CancelledError):
        await gone
