"""Name -> component registries with lazy ``"module:attr"`` targets and "did you mean" errors.

The four registries (backends, signals, strategies, tasks) are the one sanctioned module-level
state; they are declarative and filled at import time. Third-party packages add entries through
the ``thinktwice.plugins`` entry-point group: each entry point is a callable run once, on first
lookup, that registers its components.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from thinktwice.errors import ConfigError, UnknownNameError

__all__ = ["Registry", "backends", "signals", "strategies", "tasks"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from kebab-case names to factories (classes or callables), resolved lazily.

    >>> r: Registry[object] = Registry("widget")
    >>> r.add("dict", "builtins:dict")
    >>> r.create("dict", a=1)
    {'a': 1}
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._builtins = builtins  # module whose import registers the built-in entries
        self._entries: dict[str, Callable[..., T] | str] = {}
        self._help: dict[str, str] = {}
        self._plugins_loaded = False

    def add(self, name: str, target: Callable[..., T] | str, help: str = "") -> None:
        """Register ``target`` (a factory, or a lazy ``"module:attr"`` string) under ``name``."""
        if name in self._entries and self._entries[name] != target:
            raise ConfigError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target
        if help:
            self._help[name] = help

    def register(self, name: str, help: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator form of :meth:`add`."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            self.add(name, obj, help)
            return obj

        return deco

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        if self._builtins:
            importlib.import_module(self._builtins)
        from importlib.metadata import entry_points

        for ep in entry_points(group="thinktwice.plugins"):
            ep.load()()

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; raises UnknownNameError listing the valid names."""
        self._load_plugins()
        try:
            target = self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            raise UnknownNameError(self.kind, name, self.names(), close[0] if close else None) from None
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            target = obj  # type: ignore[assignment]
            self._entries[name] = target
        return target  # type: ignore[return-value]

    def create(self, name: str, /, **options: Any) -> T:
        """Build the component registered under ``name`` with ``options``."""
        return self.get(name)(**options)


backends: Registry[Any] = Registry("backend", "thinktwice.lm")
signals: Registry[Any] = Registry("signal", "thinktwice.signals")
strategies: Registry[Any] = Registry("strategy", "thinktwice.strategies")
tasks: Registry[Any] = Registry("task", "thinktwice.tasks")
