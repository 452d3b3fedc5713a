"""What a long-lived process does with what it loaded at its start.

Everything loaded before serving (rules, plugins, templates, lexicons, modules) lives as
long as the process. Frozen (``gc.freeze``), the collector no longer walks it at each
full collection, and pre-forked workers keep sharing its memory pages: a collection
writes to every object it walks (its header), and a written page is copied into the
worker that wrote it. Two idle workers: 137 MiB of PSS together, 163 without.

Only worth it when workers fork: with nothing old left to weigh against, Python's
collector then runs full collections more often, about 1 % more instructions a message
(bench/instructions.py: 45.49 M against 44.94 M), for no memory saved in one process.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Once loaded, before forking or serving: collect, then freeze what is left."""
    gc.collect()
    gc.freeze()
