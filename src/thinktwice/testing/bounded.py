"""A call that must finish in bounded time, checked without letting a test hang."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


def within(fn: Callable[[], T], seconds: float) -> T:
    """``fn()`` run on a daemon thread; fails (instead of hanging) if it outlives ``seconds``.

    Its exceptions are re-raised on the caller's thread.
    """
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # noqa: BLE001 (re-raised below, on the caller's thread)
            err.append(e)

    t = threading.Thread(target=run, daemon=True, name="thinktwice-bounded")
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if err:
        raise err[0]
    return out[0]
