"""Persistence: the store interface and its backends."""

from mailflow.store.base import OutboxRow, Store, StoreUnavailable, Transaction, open_store

__all__ = ["OutboxRow", "Store", "StoreUnavailable", "Transaction", "open_store"]
