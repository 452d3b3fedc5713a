"""What a long-lived process does with what it loaded at its start.

Everything loaded before serving (rules, plugins, templates, lexicons, modules) lives as
long as the process. Frozen (``gc.freeze``), the collector no longer walks it at each
full collection, and pre-forked workers keep sharing its memory pages: a collection
writes to every object it walks (its header), and a written page is copied into the
worker that wrote it. Two idle workers: 137 MiB of PSS together, 163 without.

Under load, one worker unfrozen ran a full collection every 3.5 s, each walking the
150,000 objects loaded at start for 80-100 ms: a stall of the event loop, and 0.14 ms of
CPU a message (bench/profiling.py, the collector timed through ``gc.callbacks``).
Frozen, one walks the 15,000-25,000 objects alive beside them, in 5-8 ms: the collector's
whole cost fell from 0.27 to 0.08 ms a message. Collecting the young generation less
often (every 10,000 allocations, not 700) took a little more off, and added 10-16 MiB of
PSS at 200 sessions (garbage waits longer): not done.
"""

from __future__ import annotations

import asyncio
import gc


def settle() -> None:
    """Once loaded, before forking or serving: collect, then freeze what is left."""
    gc.collect()
    gc.freeze()


#: seconds after a reload before what is loaded then is frozen: the messages that were
#: still using the old configuration are done by then
REFREEZE_AFTER = 60.0


def thaw(loop: asyncio.AbstractEventLoop, delay: float = REFREEZE_AFTER) -> None:
    """After a reload: the old configuration must become collectable (frozen, its
    reference cycles would never be freed), and the new one is frozen once the old is
    gone. In pre-forked workers the full collection this allows copies the pages it
    walks: a reload costs some of the memory they shared. Nothing frozen (a daemon run
    in-process, by tests): nothing to do."""
    if not gc.get_freeze_count():
        return
    gc.unfreeze()
    loop.call_later(delay, settle)
