"""Name -> component registries with lazy ``"module:attr"`` targets and "did you mean" errors.

The four registries (backends, signals, strategies, tasks) are the one sanctioned module-level
state; they are declarative and filled at import time. Third-party packages add entries through
the ``thinktwice.plugins`` entry-point group: each entry point is a callable run once, on first
lookup, that registers its components.
"""

from __future__ import annotations

import collections.abc as abc
import difflib
import enum
import importlib
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from thinktwice.errors import ConfigError, UnknownNameError

__all__ = ["Registry", "backends", "check_options", "signals", "strategies", "tasks"]

T = TypeVar("T")


_P = inspect.Parameter
_SEQUENCES = (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable,
              abc.Set, abc.MutableSet)
_MAPPINGS = (dict, abc.Mapping, abc.MutableMapping)
_JSON_TYPES = (str, int, float, bool, list, dict, type(None))


def check_options(kind: str, name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """Raise ConfigError unless ``factory(**options)`` names only parameters ``factory`` declares, gives
    every required one, and gives each a value of its annotated type.

    Types are checked where the annotation says something a value can be checked against (numbers,
    strings, booleans, None, Literal, lists and mappings of those, callables, classes); anything
    else (a Protocol, an unresolvable forward reference, ``Any``) is accepted.

    >>> def f(n: int, temperature: float = 1.0) -> None: ...
    >>> check_options("strategy", "f", f, {"n": 2, "temperature": "hot"})
    Traceback (most recent call last):
    ...
    thinktwice.errors.ConfigError: strategy 'f' option 'temperature' must be float, got 'hot' (str)
    """
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    params = {p.name: p for p in sig.parameters.values() if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)}
    if not any(p.kind is _P.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            many = "s" if len(unknown) > 1 else ""
            raise ConfigError(
                f"{kind} {name!r} has no option{many} {', '.join(map(repr, unknown))}; "
                f"its options are: {', '.join(sorted(params)) or 'none'}"
            )
    hints = _hints(factory, params)
    for key, value in options.items():
        if key in hints and _conforms(value, hints[key]) is False:
            raise ConfigError(
                f"{kind} {name!r} option {key!r} must be {_type_name(params[key], hints[key])}, "
                f"got {_short(value)} ({type(value).__name__})"
            )
    missing = [p.name for p in sig.parameters.values()
               if p.default is _P.empty and p.kind not in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)
               and p.name not in options]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs option(s) {', '.join(missing)}")


def _hints(factory: Callable[..., Any], params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    """The resolved annotations of ``params``: all at once when they resolve, else one by one."""
    is_dataclass = inspect.isclass(factory) and hasattr(factory, "__dataclass_fields__")
    target: Any = factory.__init__ if inspect.isclass(factory) and not is_dataclass else factory  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(target)
        return {k: v for k, v in hints.items() if k in params}
    except Exception:  # noqa: BLE001 (a name imported only for type checkers: resolve what we can)
        pass
    module = sys.modules.get(getattr(factory, "__module__", "") or "")
    namespace = dict(vars(module)) if module is not None else {}
    out: dict[str, Any] = {}
    for key, p in params.items():
        ann = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, namespace)  # noqa: S307 (what typing.get_type_hints does with a string)
            except Exception:  # noqa: BLE001
                continue
        if ann is not _P.empty:
            out[key] = ann
    return out


def _conforms(value: Any, tp: Any) -> bool | None:
    """Whether ``value`` is of type ``tp``: True, False, or None when the annotation cannot tell."""
    if tp is Any or tp is _P.empty or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _conforms(value, args[0])
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [_conforms(value, a) for a in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    container = origin or tp
    if container is abc.Callable or tp is typing.Callable:
        return callable(value)
    if container in _SEQUENCES:
        return _conforms_items(value, container, args)
    if container in _MAPPINGS:
        if not isinstance(value, abc.Mapping):
            return False
        if len(args) != 2:
            return True
        return _all(_conforms(k, args[0]) for k in value) and _all(_conforms(v, args[1]) for v in value.values())
    if inspect.isclass(tp):
        return _conforms_class(value, tp)
    return None


def _conforms_items(value: Any, container: Any, args: tuple[Any, ...]) -> bool | None:
    if isinstance(value, (str, bytes)) or not isinstance(value, abc.Iterable) or isinstance(value, abc.Mapping):
        return False  # a string is never meant as a list of characters
    if container in (set, frozenset, abc.Set, abc.MutableSet):
        if not isinstance(value, (abc.Set, list, tuple)):
            return False
    elif container is not abc.Iterable and not isinstance(value, (abc.Sequence, abc.Set)):
        return False
    if not args:
        return True
    items = list(value)
    if container is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            return False
        return _all(_conforms(v, a) for v, a in zip(items, args))
    return _all(_conforms(v, args[0]) for v in items)


def _conforms_class(value: Any, tp: type) -> bool | None:
    if getattr(tp, "_is_protocol", False) and not getattr(tp, "_is_runtime_protocol", False):
        return None
    try:
        if isinstance(value, tp):
            return True
    except TypeError:
        return None
    if issubclass(tp, os.PathLike) and isinstance(value, str):
        return True  # a path given as text
    if issubclass(tp, enum.Enum):
        return any(value == m.value for m in tp)
    # a JSON value (what the CLI gives) of the wrong shape is wrong; other objects may duck-type
    return False if isinstance(value, _JSON_TYPES) else None


def _all(verdicts: Iterator[bool | None] | Any) -> bool | None:
    seen_unknown = False
    for v in verdicts:
        if v is False:
            return False
        seen_unknown |= v is None
    return None if seen_unknown else True


def _type_name(param: inspect.Parameter, tp: Any) -> str:
    if isinstance(param.annotation, str):
        return param.annotation
    text = getattr(tp, "__name__", None) if inspect.isclass(tp) else None
    return text or re.sub(r"\b(?:[A-Za-z_][\w]*\.)+(\w+)", r"\1", str(tp).replace("typing.", ""))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        """Build the component registered under ``name`` with ``options``, after checking their names and
        types against the factory's signature (:func:`check_options`)."""
        factory = self.get(name)
        check_options(self.kind, name, factory, options)
        return factory(**options)


backends: Registry[Any] = Registry("backend", "thinktwice.lm")
signals: Registry[Any] = Registry("signal", "thinktwice.signals")
strategies: Registry[Any] = Registry("strategy", "thinktwice.strategies")
tasks: Registry[Any] = Registry("task", "thinktwice.tasks")
