"""One registry type for everything edgelm looks up by name: stages, runtimes, int4 algorithms, pruning scores.

A registry may name a package whose modules register their entries on import; `discover()` imports every module
in it once (no hand-kept list), so adding an entry is adding a module. Config fields that take a registered
name use `Name(registry)`: pydantic checks the value against the registry at validation time, and the CLI turns
the field into a choice of the registered names (`choices_of`), so a newly registered entry is accepted
everywhere at once.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator

from edgelm.core.errors import EdgelmError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, package: str | None = None):
        self.what, self.package = what, package
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str, entry: T) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} needs a non-empty string name, got {name!r}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
        self._discovered = True  # only once every module imported: a failed import is retried, not half-remembered

    def names(self) -> tuple[str, ...]:
        self.discover()
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self.discover()
        return list(self._entries.items())

    def get(self, name: str) -> T:
        self.discover()
        if name not in self._entries:
            raise EdgelmError(f"unknown {self.what} {name!r}; use one of {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries


@dataclass(frozen=True)
class Choices:
    """Annotated metadata: the field's value must be a name in `registry` (read by the CLI and `edgelm stages`)."""

    registry: Registry

    def names(self) -> tuple[str, ...]:
        return self.registry.names()

    def check(self, value: str) -> str:
        if value not in self.registry:
            raise ValueError(f"unknown {self.registry.what} {value!r}; use one of {', '.join(self.names())}")
        return value


def Name(registry: Registry) -> Any:
    """A str config field type whose value must be registered in `registry`."""
    choices = Choices(registry)
    return Annotated[str, choices, AfterValidator(choices.check)]


def choices_of(annotation) -> tuple[str, ...] | None:
    """The allowed values of a config field type: a Literal's values or a registry's names, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is Annotated:
        found = [m for m in annotation.__metadata__ if isinstance(m, Choices)]
        return found[0].names() if found else None
    return None
