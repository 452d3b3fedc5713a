"""The heap of a long-lived process: frozen once loaded, thawed by a reload."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from mailflow import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _collector_as_found() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_what_is_loaded_is_frozen() -> None:
    loaded = _Node()
    heap.settle()
    assert gc.get_freeze_count() > 0
    gone = weakref.ref(loaded)
    del loaded
    gc.collect()
    assert gone() is not None  # frozen: a full collection no longer walks it


async def test_a_reload_makes_the_old_configuration_collectable_then_freezes_again() -> None:
    old = _Node()
    heap.settle()
    gone = weakref.ref(old)
    del old
    heap.thaw(asyncio.get_running_loop(), delay=0.05)
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None
    await asyncio.sleep(0.2)
    assert gc.get_freeze_count() > 0  # what the reload loaded, frozen in turn


async def test_nothing_frozen_nothing_to_thaw() -> None:
    gc.unfreeze()
    heap.thaw(asyncio.get_running_loop(), delay=0.01)
    await asyncio.sleep(0.05)
    assert gc.get_freeze_count() == 0  # an in-process daemon's reload freezes nothing
