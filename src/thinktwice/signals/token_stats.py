"""Pure, vectorised statistics over a response's per-token records (:class:`~thinktwice.types.TokenStat`).

Every function takes either a sequence of TokenStat or a :class:`TokenArrays` (the same data
converted to numpy once; convert first when several statistics are needed). Empty token lists give
NaN. Natural logs throughout; "higher = more confident" except :func:`mean_entropy`.

Sources: mean / sequence logprob and path probability (RPC, arXiv 2502.00511); self-certainty
(Kang et al., arXiv 2502.18581); DeepConf token and group confidence (Fu et al., arXiv 2508.15260).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter, itemgetter

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.types import TokenStat

__all__ = [
    "DEEPCONF_K",
    "DEEPCONF_WINDOW",
    "TokenArrays",
    "as_arrays",
    "deepconf_scores",
    "group_confidences",
    "mean_entropy",
    "mean_logprob",
    "mean_self_certainty",
    "path_prob",
    "require_top_width",
    "sequence_logprob",
    "token_confidence",
    "token_confidences",
]

DEEPCONF_K = 20
"""DeepConf's top-k for token confidence (facebookresearch/deepconf default)."""
DEEPCONF_WINDOW = 2048
"""DeepConf's group (sliding-window) size and tail length, in tokens."""


_LOGPROB = attrgetter("logprob")
_TOP = attrgetter("top")
_ENTROPY = attrgetter("entropy")
_SELF_CERTAINTY = attrgetter("self_certainty")
_APPROX = attrgetter("approx")
_SECOND = itemgetter(1)


@dataclass(frozen=True, slots=True, eq=False)
class TokenArrays:
    """One response's token statistics as numpy arrays (T = number of tokens, K = widest top-k).

    ``top`` is (T, K) with NaN where a token reported fewer than K alternatives (or none) and where
    an alternative's logprob was -inf (masked vocabulary). ``entropy`` / ``self_certainty`` are None
    when any token lacks the field (they need the full next-token distribution). ``approx`` is True
    when any token's fields came from a renormalised top-k (``TokenStat.approx``), not the full one.
    """

    logprob: np.ndarray
    top: np.ndarray
    entropy: np.ndarray | None
    self_certainty: np.ndarray | None
    approx: bool = False

    @property
    def n(self) -> int:
        return int(self.logprob.shape[0])

    @classmethod
    def from_tokens(cls, tokens: Sequence[TokenStat]) -> TokenArrays:
        # map/attrgetter/itemgetter keep the per-token work in C: this conversion dominates scoring time
        n = len(tokens)
        logprob = np.fromiter(map(_LOGPROB, tokens), dtype=np.float64, count=n)
        rows = list(map(_TOP, tokens))
        widths = set(map(len, rows))
        width = max(widths, default=0)
        if width and len(widths) == 1:
            top = np.fromiter(map(_SECOND, chain.from_iterable(rows)), dtype=np.float64,
                              count=n * width).reshape(n, width)
        else:
            top = np.full((n, width), np.nan)
            for i, r in enumerate(rows):
                if r:
                    top[i, : len(r)] = [lp for _, lp in r]
        if width:
            top[~np.isfinite(top)] = np.nan
        ent = list(map(_ENTROPY, tokens))
        sc = list(map(_SELF_CERTAINTY, tokens))
        entropy = None if None in ent else np.asarray(ent, dtype=np.float64)
        self_certainty = None if None in sc else np.asarray(sc, dtype=np.float64)
        return cls(logprob, top, entropy, self_certainty, any(map(_APPROX, tokens)))


def as_arrays(tokens: Sequence[TokenStat] | TokenArrays) -> TokenArrays:
    """``tokens`` as :class:`TokenArrays` (returned as is when already converted)."""
    return tokens if isinstance(tokens, TokenArrays) else TokenArrays.from_tokens(tokens)


def mean_logprob(tokens: Sequence[TokenStat] | TokenArrays) -> float:
    """Mean chosen-token logprob ``(1/T) Σ_t ℓ_t`` (length-normalised log-likelihood); NaN if empty."""
    a = as_arrays(tokens)
    return float(a.logprob.mean()) if a.n else math.nan


def sequence_logprob(tokens: Sequence[TokenStat] | TokenArrays) -> float:
    """Sequence log-likelihood ``Σ_t ℓ_t`` (favours short answers: prefer the mean); NaN if empty."""
    a = as_arrays(tokens)
    return float(a.logprob.sum()) if a.n else math.nan


def path_prob(tokens: Sequence[TokenStat] | TokenArrays) -> float:
    """RPC path probability ``exp(mean logprob)`` (arXiv 2502.00511), in [0, 1]; NaN if empty."""
    m = mean_logprob(tokens)
    return math.exp(m) if not math.isnan(m) else math.nan


def mean_entropy(tokens: Sequence[TokenStat] | TokenArrays) -> float:
    """Mean exact next-token entropy (nats) from ``TokenStat.entropy``; lower = more confident.

    Raises CapabilityError when a token lacks the entropy (it needs the full distribution; a
    truncated top-k would be biased, so no approximation is made here). NaN if empty.
    """
    a = as_arrays(tokens)
    if not a.n:
        return math.nan
    if a.entropy is None:
        raise CapabilityError(
            "mean entropy needs the full next-token distribution; the tokens carry no entropy "
            "(use a backend with full_vocab, e.g. llamacpp or hf)"
        )
    return float(a.entropy.mean())


def mean_self_certainty(tokens: Sequence[TokenStat] | TokenArrays) -> float:
    """Mean self-certainty ``KL(U || p_t)`` over tokens (Kang et al., arXiv 2502.18581); NaN if empty.

    Raises CapabilityError when a token lacks it (needs the full distribution).
    """
    a = as_arrays(tokens)
    if not a.n:
        return math.nan
    if a.self_certainty is None:
        raise CapabilityError(
            "self-certainty needs the full next-token distribution; the tokens carry none "
            "(use a backend with full_vocab, e.g. llamacpp or hf)"
        )
    return float(a.self_certainty.mean())


def require_top_width(tokens: Sequence[TokenStat] | TokenArrays, what: str) -> None:
    """Raise CapabilityError unless the tokens carry top-k alternatives of width >= 2 (or are empty).

    DeepConf's token confidence needs real alternatives: with one logprob per token it reduces to
    ``-log p(chosen)``, which grows as the model gets *less* sure, so every DeepConf score would be
    inverted rather than merely noisier.
    """
    a = as_arrays(tokens)
    width = int(a.top.shape[1])
    if a.n and width < 2:
        raise CapabilityError(
            f"{what} needs top-k logprobs with k >= 2 per token (top_logprobs >= 2); the samples carry "
            f"{width} (with one logprob per token, -log p of the chosen token grows as the model is less "
            "sure, which inverts the confidence). Sample with top_logprobs >= 2 (DeepConf uses 20)."
        )


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")


def token_confidence(stat: TokenStat, k: int = DEEPCONF_K) -> float:
    """DeepConf token confidence ``C_t = -(1/k') Σ_{j ≤ k'} log p_t(j)`` (arXiv 2508.15260).

    ``k' = min(k, available width)``: backends return at most their ``top_logprobs`` alternatives,
    so the mean runs over what is there (DeepConf uses k = 20; a top-5 backend gives a top-5 mean,
    which is larger for the same distribution). -inf entries are dropped. NaN when the token has
    no alternatives. Width 1 is degenerate: ``-log p(top-1)`` grows as the model gets *less* sure,
    so callers should require at least 2 (the DeepConf signals do).
    """
    _check_k(k)
    lps = [lp for _, lp in stat.top[:k] if math.isfinite(lp)]
    return -sum(lps) / len(lps) if lps else math.nan


def token_confidences(tokens: Sequence[TokenStat] | TokenArrays, k: int = DEEPCONF_K) -> np.ndarray:
    """:func:`token_confidence` for every token, as a (T,) array (vectorised)."""
    _check_k(k)
    a = as_arrays(tokens)
    top = a.top[:, :k]
    valid = ~np.isnan(top)
    counts = valid.sum(axis=1)
    sums = np.where(valid, top, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(counts > 0, -sums / np.maximum(counts, 1), np.nan)
    return conf.astype(np.float64, copy=False)


def _window_means(conf: np.ndarray, window: int) -> np.ndarray:
    """Sliding-window means (length T - w + 1); one group = the mean when T < w; empty if T = 0."""
    n = conf.shape[0]
    if n == 0:
        return np.empty(0)
    if n < window:
        return np.array([conf.mean()])
    c = np.concatenate(([0.0], np.cumsum(conf)))
    return (c[window:] - c[:-window]) / window


def group_confidences(
    tokens: Sequence[TokenStat] | TokenArrays, window: int = DEEPCONF_WINDOW, k: int = DEEPCONF_K
) -> np.ndarray:
    """DeepConf group confidences: means of ``C_t`` over every window of ``window`` consecutive tokens.

    A trace shorter than the window is one group (its mean); an empty trace gives an empty array.
    """
    if window < 1:
        raise ConfigError(f"window must be >= 1, got {window}")
    return _window_means(token_confidences(tokens, k), window)


def deepconf_scores(
    tokens: Sequence[TokenStat] | TokenArrays,
    window: int = DEEPCONF_WINDOW,
    tail: int = DEEPCONF_WINDOW,
    bottom_frac: float = 0.1,
    k: int = DEEPCONF_K,
) -> dict[str, float]:
    """The four DeepConf trace scores (arXiv 2508.15260), each NaN for an empty trace.

    ``mean``: mean ``C_t``; ``tail``: mean ``C_t`` of the last ``tail`` tokens; ``bottom10``: mean of
    the lowest ``bottom_frac`` of group confidences (at least one group); ``lowest``: minimum group
    confidence.
    """
    if window < 1 or tail < 1:
        raise ConfigError(f"window and tail must be >= 1, got {window}, {tail}")
    if not 0 < bottom_frac <= 1:
        raise ConfigError(f"bottom_frac must be in (0, 1], got {bottom_frac}")
    conf = token_confidences(tokens, k)
    if conf.shape[0] == 0:
        return {"mean": math.nan, "tail": math.nan, "bottom10": math.nan, "lowest": math.nan}
    groups = _window_means(conf, window)
    m = max(1, int(len(groups) * bottom_frac))
    bottom = np.partition(groups, m - 1)[:m]
    return {
        "mean": float(conf.mean()),
        "tail": float(conf[-tail:].mean()),
        "bottom10": float(bottom.mean()),
        "lowest": float(groups.min()),
    }
