"""How strategies obtain and use signals: resolve a name to a Signal, score candidates, turn scores
into non-negative vote weights.

A strategy field ``signal`` holds either a registered signal name (``"self-certainty"``,
``"path-prob"``, ``"p-true"``...) or a Signal object; it is resolved per run, so strategies stay
plain frozen configs. Scoring goes through the run's Meter, so signals that call the model
(P(True), backward verification) are billed to the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.signals.base import Signal, check_requires
from thinktwice.strategies.base import RunContext
from thinktwice.types import Candidate

__all__ = [
    "SignalSpec",
    "check_signal",
    "resolve_signal",
    "score_candidates",
    "signal_name",
    "weights_from_scores",
]

SignalSpec = Any
"""A registered signal name, or an object following the Signal protocol."""


def resolve_signal(spec: SignalSpec) -> Signal:
    """The Signal for ``spec``: looked up in the signal registry when it is a name."""
    if isinstance(spec, str):
        import thinktwice.signals  # noqa: F401  (fills the registry)
        from thinktwice.registry import signals

        if spec not in signals:
            # the token-statistics signals need no registry entry to be usable here
            try:
                from thinktwice.signals.confidence import TOKEN_SIGNALS
            except ImportError:
                TOKEN_SIGNALS = ()
            for cls in TOKEN_SIGNALS:
                if cls.name == spec:
                    return cls()  # type: ignore[no-any-return]
        return signals.create(spec)  # type: ignore[no-any-return]
    if not hasattr(spec, "score") or not hasattr(spec, "name"):
        raise ConfigError(f"signal must be a registered name or a Signal object, got {spec!r}")
    return spec  # type: ignore[no-any-return]


def signal_name(spec: SignalSpec) -> str:
    return spec if isinstance(spec, str) else str(getattr(spec, "name", type(spec).__name__))


def check_signal(signal: Signal, ctx: RunContext) -> None:
    """Raise CapabilityError before any sampling when the backend cannot feed ``signal``."""
    check_requires(signal, ctx.meter.capabilities, f"{ctx.meter.name}:{ctx.meter.model}")


async def score_candidates(
    signal: Signal, ctx: RunContext, candidates: Sequence[Candidate]
) -> list[Candidate]:
    """``candidates`` with the signal's score attached under its name; notes the scores."""
    if not candidates:
        return []
    scores = await signal.score(ctx.query, candidates, ctx.meter)
    if len(scores) != len(candidates):
        raise ConfigError(f"signal {signal.name!r} returned {len(scores)} scores for {len(candidates)} candidates")
    out = [c.with_score(signal.name, float(s)) for c, s in zip(candidates, scores)]
    ctx.note("score", signal=signal.name, scores=[_round(float(s)) for s in scores])
    return out


def weights_from_scores(scores: Sequence[float]) -> list[float]:
    """Non-negative vote weights (METHODS §4.2): scores as they are when all are >= 0, otherwise
    treated as log-scale and exponentiated relative to the maximum (``exp(s - max s)``), which
    maps mean logprobs to path probabilities up to a common factor. NaN scores weigh 0.
    """
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return [0.0] * len(scores)
    if min(finite) >= 0:
        return [s if math.isfinite(s) else 0.0 for s in scores]
    top = max(finite)
    return [math.exp(s - top) if math.isfinite(s) else 0.0 for s in scores]


def _round(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else x
