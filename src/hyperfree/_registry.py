"""One small registry class for everything the package offers by name.

Models (:mod:`hyperfree.models`), datasets (:mod:`hyperfree.data`), the harness's optimisers
(:mod:`hyperfree.train.optimizers`) and experiments (:mod:`hyperfree.experiments`) each keep
one :class:`Registry` of their own entry dataclass (``ModelInfo``, ``OptimInfo``, ...) and wrap
it in their public functions (``register_model``, ``create_model``, ``list_models``, ...).

The rules are the same everywhere: names are non-empty lowercase, look-ups ignore case and
surrounding spaces, registering a second, different entry under a taken name is refused, and an
unknown name is a one-line ``ValueError`` that lists the choices.
"""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` (``"model"``, ``"dataset"``, ...) by name, in registration order.

    ``hint`` is appended to the unknown-name error (e.g. ``" or a stack such as 'sgd/sgd'"``).
    """

    def __init__(self, kind: str, *, hint: str = "") -> None:
        self.kind, self.hint = kind, hint
        self._entries: dict[str, T] = {}

    def check_name(self, name: str) -> str:
        """``name`` if it is a valid new key (non-empty lowercase); ValueError otherwise."""
        if not isinstance(name, str) or not name or name != name.lower() or name != name.strip():
            suggestion = f", e.g. {name.strip().lower()!r}" if isinstance(name, str) else ""
            raise ValueError(f"{self.kind} name {name!r} must be non-empty lowercase"
                             f"{suggestion}")
        return name

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` as ``name``; an equal entry again is a no-op, another one an error."""
        self.check_name(name)
        old = self._entries.get(name)
        if old is not None and old != entry:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry ``name`` (for tests and plug-ins that clean up)."""
        return self._entries.pop(self._lookup(name))

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (case-insensitive); ValueError listing the choices."""
        return self._entries[self._lookup(name)]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def _lookup(self, name: str) -> str:
        key = self._key(name)
        if key not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of "
                             f"{', '.join(self._entries)}{self.hint}")
        return key

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower() if isinstance(name, str) else repr(name)
