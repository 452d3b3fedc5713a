"""Persistence: the store interface and its backends."""

from mailflow.store.base import (
    OutboxRow,
    Store,
    StoreUnavailable,
    TimerInfo,
    TimerLost,
    TimerRow,
    Transaction,
)
from mailflow.store.opening import open_store

__all__ = ["OutboxRow", "Store", "StoreUnavailable", "TimerInfo", "TimerLost", "TimerRow",
           "Transaction", "open_store"]
