"""Typed per-message state: ``StashKey`` and ``Stash``, like pytest's.

A plugin keeps its own state for one message under a key it creates once, at
import time; the key's type parameter types what it holds, so two plugins
never collide on a string and ``mypy`` checks both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar, cast, overload

T = TypeVar("T")


class StashKey(Generic[T]):
    """A typed key into a :class:`Stash`; create one per module, at import time.

    ``name`` (optional) is what ``mailflow try`` shows the value under.
    """

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"StashKey({self.name!r})" if self.name else super().__repr__()


class Stash:
    """Per-message state of plugins, under typed keys. Store values you replace, not mutate:
    the chain restores the stash as it was when a stage fails."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[StashKey[Any], Any] | None = None) -> None:
        self._items: dict[StashKey[Any], Any] = dict(items or {})

    def __getitem__(self, key: StashKey[T]) -> T:
        return cast(T, self._items[key])

    def __setitem__(self, key: StashKey[T], value: T) -> None:
        self._items[key] = value

    def __delitem__(self, key: StashKey[Any]) -> None:
        del self._items[key]

    def __contains__(self, key: StashKey[Any]) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[StashKey[Any]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def get(self, key: StashKey[T]) -> T | None: ...

    @overload
    def get(self, key: StashKey[T], default: T) -> T: ...

    def get(self, key: StashKey[T], default: T | None = None) -> T | None:
        return cast("T | None", self._items.get(key, default))

    def setdefault(self, key: StashKey[T], default: T) -> T:
        return cast(T, self._items.setdefault(key, default))

    def copy(self) -> Stash:
        return Stash(self._items)

    def named(self) -> dict[str, Any]:
        """The entries whose key has a name, for ``mailflow try``."""
        return {k.name: v for k, v in self._items.items() if k.name}
