"""One read-only registry type for every named choice (backbones, attacks, threat models, ...).

Looking up an unknown name raises UnknownNameError listing the valid ones; callers cannot add,
replace or remove entries (the entries themselves are frozen dataclasses or tuples).
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Generic, Iterator, TypeVar

from app.common.errors import UnknownNameError

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """name -> spec, in a fixed order. `kind` names the choice in error messages ("attack")."""

    def __init__(self, kind: str, entries: dict[str, T]):
        self.kind = kind
        self._entries = MappingProxyType(dict(entries))

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):   # TypeError: an unhashable name sent through the API
            raise UnknownNameError(self.kind, name, self._entries) from None

    def __contains__(self, name) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name, default=None):
        """The entry, or `default` for an unknown (or unhashable) name; never raises."""
        return self._entries.get(name, default) if name in self else default

    def check(self, name: str) -> str:
        """Return name if registered, else raise the error that lists the valid names."""
        self[name]
        return name

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
