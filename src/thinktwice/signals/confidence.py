"""Single-response confidence signals computed from the samples' own token statistics (no extra calls).

| name | paper | needs | value |
|---|---|---|---|
| ``mean-logprob`` | length-normalised likelihood | chosen-token logprobs | ``(1/T) Σ ℓ_t`` |
| ``seq-logprob`` | sequence likelihood | chosen-token logprobs | ``Σ ℓ_t`` |
| ``path-prob`` | RPC, arXiv 2502.00511 | chosen-token logprobs | ``exp(mean ℓ_t)`` |
| ``token-entropy`` | predictive entropy | full distribution | ``-mean H_t`` (negated: higher = surer) |
| ``self-certainty`` | Kang et al., arXiv 2502.18581 | full distribution | ``mean KL(U‖p_t)`` |
| ``deepconf-mean``/``-tail``/``-bottom10``/``-lowest`` | Fu et al., arXiv 2508.15260 | top-k logprobs | see :func:`deepconf_scores` |

Cost: none of them makes a model call or spends a token; they read what sampling already returned.
A candidate without token statistics raises :class:`~thinktwice.errors.CapabilityError`, and so do
DeepConf scores on fewer than 2 top logprobs per token. Entropy and self-certainty filled from a
renormalised top-k (``TokenStat.approx``) are approximations: :func:`approximate_signals` names them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import ClassVar

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.signals.token_stats import (
    DEEPCONF_K,
    DEEPCONF_WINDOW,
    TokenArrays,
    deepconf_scores,
    mean_entropy,
    mean_logprob,
    mean_self_certainty,
    require_top_width,
    sequence_logprob,
)
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate

__all__ = [
    "FULL_VOCAB_SIGNALS",
    "TOKEN_SIGNALS",
    "DeepConfBottom10",
    "DeepConfLowest",
    "DeepConfMean",
    "DeepConfTail",
    "MeanLogprob",
    "PathProb",
    "SelfCertainty",
    "SeqLogprob",
    "TokenEntropy",
    "TokenSignal",
    "TokenSignalConfig",
    "approximate_signals",
    "candidate_arrays",
    "score_token_signals",
]


@dataclass(frozen=True, slots=True)
class TokenSignalConfig:
    """Settings of the token signals (only DeepConf reads them).

    ``window``: DeepConf group size in tokens (2048, METHODS §2.2); ``tail``: tokens in the tail
    score (2048); ``bottom_frac``: share of lowest groups averaged by bottom-10% (0.1); ``k``: top-k
    width of the token confidence (20; narrower backends give their own width; at least 2, since a
    top-1 "confidence" is ``-log p(chosen)``, which grows as the model is less sure).
    """

    window: int = DEEPCONF_WINDOW
    tail: int = DEEPCONF_WINDOW
    bottom_frac: float = 0.1
    k: int = DEEPCONF_K

    def __post_init__(self) -> None:
        if self.window < 1 or self.tail < 1:
            raise ConfigError(f"window and tail must be >= 1, got {self.window}, {self.tail}")
        if self.k < 2:
            raise ConfigError(f"k must be >= 2 (top-1 inverts DeepConf's confidence), got {self.k}")
        if not 0 < self.bottom_frac <= 1:
            raise ConfigError(f"bottom_frac must be in (0, 1], got {self.bottom_frac}")


_APPROX = attrgetter("approx")

_WHAT = {
    "logprobs": "per-token logprobs",
    "full_vocab": "per-token entropy / self-certainty from the full next-token distribution",
    "top_logprobs": "per-token top-k logprobs",
}


def _missing(signal: str, need: str, candidate: Candidate, backend: str | None = None) -> CapabilityError:
    s = candidate.sample
    src = f"backend {backend or s.endpoint or s.model or 'unknown'!r}"
    return CapabilityError(
        f"signal {signal!r} needs {_WHAT[need]}; the samples carry none ({src} without them). "
        "Sample with logprobs on a backend that returns them, or pick another signal."
    )


def candidate_arrays(
    candidates: Sequence[Candidate], signal: str, need: str = "logprobs", backend: str | None = None
) -> list[TokenArrays]:
    """Each candidate's tokens as :class:`TokenArrays`; CapabilityError names what is missing."""
    out = []
    for c in candidates:
        if c.sample.tokens is None:
            raise _missing(signal, need, c, backend)
        out.append(TokenArrays.from_tokens(c.sample.tokens))
    return out


class TokenSignal:
    """Base of the token signals: converts each candidate's tokens once and applies :meth:`value`."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset({"tokens", "logprobs"})
    need: ClassVar[str] = "logprobs"
    needs_model: ClassVar[bool] = False

    def __init__(self, config: TokenSignalConfig | None = None, **options: float) -> None:
        self.config = config or TokenSignalConfig(**options)  # type: ignore[arg-type]

    def value(self, arrays: TokenArrays) -> float:
        raise NotImplementedError

    def check(self, arrays: TokenArrays, candidate: Candidate) -> None:
        """Raise CapabilityError when ``arrays`` lacks what :meth:`value` reads."""
        if self.need == "full_vocab" and arrays.n and (arrays.entropy is None or arrays.self_certainty is None):
            raise _missing(self.name, self.need, candidate)
        if self.need == "top_logprobs":
            require_top_width(arrays, f"signal {self.name!r}")

    def score_arrays(self, arrays: Sequence[TokenArrays], candidates: Sequence[Candidate]) -> list[float]:
        for a, c in zip(arrays, candidates):
            self.check(a, c)
        return [self.value(a) for a in arrays]

    def score_sync(self, candidates: Sequence[Candidate], backend: str | None = None) -> list[float]:
        """The scores without an event loop (token signals make no calls)."""
        return self.score_arrays(candidate_arrays(candidates, self.name, self.need, backend), candidates)

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter | None = None) -> list[float]:
        return self.score_sync(candidates, lm.name if lm is not None else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


class MeanLogprob(TokenSignal):
    """Mean chosen-token logprob (length-normalised log-likelihood). Needs L1; no extra cost."""

    name = "mean-logprob"

    def value(self, arrays: TokenArrays) -> float:
        return mean_logprob(arrays)


class SeqLogprob(TokenSignal):
    """Sequence log-likelihood (sum of logprobs; biased towards short answers). Needs L1; no cost."""

    name = "seq-logprob"

    def value(self, arrays: TokenArrays) -> float:
        return sequence_logprob(arrays)


class PathProb(TokenSignal):
    """RPC path probability ``exp(mean logprob)`` (arXiv 2502.00511). Needs L1; no extra cost."""

    name = "path-prob"

    def value(self, arrays: TokenArrays) -> float:
        m = mean_logprob(arrays)
        return math.exp(m) if not math.isnan(m) else math.nan


class TokenEntropy(TokenSignal):
    """Negated mean next-token entropy (exact, from the full distribution; higher = more confident).

    Needs LV (``full_vocab``); a truncated top-k would bias it, so it refuses instead. No extra cost.
    """

    name = "token-entropy"
    requires = frozenset({"tokens", "full_vocab"})
    need = "full_vocab"

    def value(self, arrays: TokenArrays) -> float:
        return -mean_entropy(arrays)


class SelfCertainty(TokenSignal):
    """Mean KL(U‖p_t) over response tokens (Kang, Zhao, Song, arXiv 2502.18581). Needs LV; no cost."""

    name = "self-certainty"
    requires = frozenset({"tokens", "full_vocab"})
    need = "full_vocab"

    def value(self, arrays: TokenArrays) -> float:
        return mean_self_certainty(arrays)


class _DeepConf(TokenSignal):
    """DeepConf trace confidence (Fu et al., arXiv 2508.15260) from top-k logprobs; no extra cost."""

    requires = frozenset({"tokens", "top_logprobs"})
    need = "top_logprobs"
    min_top_logprobs: ClassVar[int] = 2  # a backend's top_logprobs below this cannot serve it
    key: ClassVar[str] = ""

    def value(self, arrays: TokenArrays) -> float:
        c = self.config
        return deepconf_scores(arrays, c.window, c.tail, c.bottom_frac, c.k)[self.key]


class DeepConfMean(_DeepConf):
    """DeepConf (arXiv 2508.15260): mean token confidence over the trace; top-k logprobs; no cost."""

    name, key = "deepconf-mean", "mean"


class DeepConfTail(_DeepConf):
    """DeepConf (arXiv 2508.15260): mean token confidence of the last ``tail`` tokens; no cost."""

    name, key = "deepconf-tail", "tail"


class DeepConfBottom10(_DeepConf):
    """DeepConf (arXiv 2508.15260): mean of the lowest 10% window-group confidences; no cost."""

    name, key = "deepconf-bottom10", "bottom10"


class DeepConfLowest(_DeepConf):
    """DeepConf (arXiv 2508.15260): lowest sliding-window group confidence; no cost."""

    name, key = "deepconf-lowest", "lowest"


TOKEN_SIGNALS: tuple[type[TokenSignal], ...] = (
    MeanLogprob, SeqLogprob, PathProb, TokenEntropy, SelfCertainty,
    DeepConfMean, DeepConfTail, DeepConfBottom10, DeepConfLowest,
)
FULL_VOCAB_SIGNALS: frozenset[str] = frozenset(c.name for c in TOKEN_SIGNALS if c.need == "full_vocab")
"""Signals that read ``TokenStat.entropy`` / ``self_certainty``: approximate when those are (top-k)."""


def approximate_signals(
    candidates: Sequence[Candidate], names: Sequence[str] | None = None
) -> frozenset[str]:
    """The names (of ``names``, default all) whose scores on ``candidates`` come from approximate
    statistics: full-vocabulary signals when some candidate carries ``approx`` tokens."""
    wanted = FULL_VOCAB_SIGNALS if names is None else FULL_VOCAB_SIGNALS.intersection(names)
    if wanted and any(any(map(_APPROX, c.sample.tokens or ())) for c in candidates):
        return frozenset(wanted)
    return frozenset()


def score_token_signals(
    candidates: Sequence[Candidate],
    signals: Sequence[TokenSignal] | None = None,
    *,
    on_missing: Callable[[TokenSignal, CapabilityError], None] | None = None,
) -> dict[str, np.ndarray]:
    """Score ``candidates`` with several token signals, converting each candidate's tokens only once.

    ``signals`` defaults to all nine with default settings. A signal whose inputs are missing
    raises CapabilityError, or, when ``on_missing`` is given, is reported to it and left out.
    """
    sigs = list(signals) if signals is not None else [cls() for cls in TOKEN_SIGNALS]
    bare = next((c for c in candidates if c.sample.tokens is None), None)
    arrays = [] if bare else [TokenArrays.from_tokens(c.sample.tokens or ()) for c in candidates]
    out: dict[str, np.ndarray] = {}
    shared: dict[TokenSignalConfig, list[dict[str, float]]] = {}  # DeepConf's four scores come together
    for s in sigs:
        try:
            if bare is not None:
                raise _missing(s.name, s.need, bare)
            if isinstance(s, _DeepConf):
                for a, c in zip(arrays, candidates):
                    s.check(a, c)
                if s.config not in shared:
                    cfg = s.config
                    shared[cfg] = [deepconf_scores(a, cfg.window, cfg.tail, cfg.bottom_frac, cfg.k) for a in arrays]
                out[s.name] = np.asarray([d[s.key] for d in shared[s.config]], dtype=np.float64)
                continue
            out[s.name] = np.asarray(s.score_arrays(arrays, candidates), dtype=np.float64)
        except CapabilityError as e:
            if on_missing is None:
                raise
            on_missing(s, e)
    return out
