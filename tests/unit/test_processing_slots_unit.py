"""At most ``smtp.max_processing`` messages in the works at once; a wait counts in the
chain's time (the deadline the chain reads), and one that lasts all of it is refused."""

from __future__ import annotations

import asyncio

from mailflow.processing_slots import CHAIN_DEADLINE, ProcessingSlots


async def test_the_others_wait_for_a_free_slot_in_turn() -> None:
    slots = ProcessingSlots(2, budget=5.0)
    inside = 0
    most = 0
    order: list[int] = []

    async def message(n: int) -> None:
        nonlocal inside, most
        async with slots.slot() as turn:
            assert turn
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.02)
            order.append(n)
            inside -= 1

    await asyncio.gather(*(message(n) for n in range(6)))
    assert most == 2
    assert sorted(order) == list(range(6))


async def test_a_wait_longer_than_the_budget_is_refused_and_frees_nothing() -> None:
    slots = ProcessingSlots(1, budget=0.1)
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.slot() as turn:
            assert turn
            await release.wait()

    held = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with slots.slot() as turn:
        assert turn is False
    assert loop.time() - started >= 0.1
    assert slots.waiting == 0
    release.set()
    await held
    async with slots.slot() as turn:  # the holder's slot came back, the refused took none
        assert turn


async def test_the_chain_deadline_counts_the_wait() -> None:
    slots = ProcessingSlots(1, budget=1.0)
    loop = asyncio.get_running_loop()
    first_in = asyncio.Event()

    async def first() -> None:
        async with slots.slot():
            first_in.set()
            await asyncio.sleep(0.2)

    task = asyncio.ensure_future(first())
    await first_in.wait()
    arrived = loop.time()
    async with slots.slot() as turn:
        assert turn
        deadline = CHAIN_DEADLINE.get()
        assert deadline is not None
        assert abs(deadline - (arrived + 1.0)) < 0.05  # from arrival, not from its turn
        assert loop.time() - arrived >= 0.15
    assert CHAIN_DEADLINE.get() is None  # outside a slot: the chain's own timeout
    await task


async def test_a_failure_inside_gives_the_slot_back() -> None:
    slots = ProcessingSlots(1, budget=0.5)
    try:
        async with slots.slot():
            raise RuntimeError("stage bug")
    except RuntimeError:
        pass
    async with slots.slot() as turn:
        assert turn
