"""The Signal protocol: a self-evaluation that scores candidates (higher = more likely right)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from thinktwice.errors import CapabilityError
from thinktwice.lm.meter import Meter
from thinktwice.tasks.base import Query
from thinktwice.types import Capabilities, Candidate

__all__ = ["Signal", "check_requires"]


@runtime_checkable
class Signal(Protocol):
    """Scores candidates for one query.

    ``requires`` names backend capabilities (see :class:`~thinktwice.types.Capabilities`) and
    the pseudo-capabilities ``"tokens"`` (per-token stats on the samples) and ``"gold"``.
    Signals that call the model do so through ``lm`` so their cost lands on the same bill.
    Scores are floats, higher meaning more confident; NaN marks "no score" for a candidate.
    """

    name: str
    requires: frozenset[str]

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]: ...


def check_requires(signal: Signal, caps: Capabilities, backend_name: str = "backend") -> None:
    """Raise CapabilityError naming the first capability ``signal`` needs and ``caps`` lacks."""
    for need in sorted(signal.requires):
        if need in ("tokens", "gold"):
            continue
        if not caps.has(need):
            raise CapabilityError(
                f"Signal {signal.name!r} needs {need!r}; backend {backend_name!r} does not provide it. "
                "Pick another signal or backend."
            )
