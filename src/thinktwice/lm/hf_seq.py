"""Host-side bookkeeping of one sequence of the ``hf`` backend: end-of-sequence, stop strings, the
token monitor and the token limit, applied to chunks of tokens the decode loop hands over.

The rules are the embedded backend's: an end-of-sequence token ends the sequence and is not kept;
a stop string ends it at the token that completed it (the text is cut before the stop string);
a monitor returning True ends it after the token it saw; then the token limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from thinktwice.lm.base import TokenMonitor
from thinktwice.types import TokenStat

__all__ = ["SeqState", "TokenTexts"]


class TokenTexts:
    """Token id -> text of that token alone (decoded once per id, in batches)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._rust = getattr(tokenizer, "backend_tokenizer", None)  # skips transformers' per-id wrappers
        self._cache: dict[int, str] = {}

    def fill(self, ids: Iterable[int]) -> None:
        missing = sorted(set(ids).difference(self._cache))
        if missing:
            rows = [[i] for i in missing]
            if self._rust is not None:
                texts = self._rust.decode_batch(rows, skip_special_tokens=False)
            else:
                texts = self._tok.batch_decode(rows, skip_special_tokens=False)
            self._cache.update(zip(missing, texts))

    def __getitem__(self, i: int) -> str:
        if i not in self._cache:
            self.fill((i,))
        return self._cache[i]

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))


class SeqState:
    """What one sequence has produced so far; :meth:`feed` takes the next chunk of tokens."""

    def __init__(self, index: int, max_tokens: int, stop: tuple[str, ...], eos: frozenset[int],
                 texts: TokenTexts, *, with_stats: bool, monitor: TokenMonitor | None) -> None:
        self.index = index
        self.max_tokens = max_tokens
        self.stop = tuple(s for s in stop if s)
        self.eos = eos
        self.texts = texts
        self.monitor = monitor
        self.with_stats = with_stats
        self.ids: list[int] = []
        self.finish: str | None = None if max_tokens > 0 else "length"
        self._f: list[np.ndarray] = []
        self._top: list[np.ndarray] = []
        self._text = ""  # decoded text so far (when there are stop strings)
        self._cut: str | None = None

    def feed(self, toks: np.ndarray, fs: np.ndarray | None, tops: np.ndarray | None) -> bool:
        """Append a chunk (tokens (S,), float stats (S, 3 + k), top ids (S, k)); True once finished."""
        if self.finish is not None:
            return True
        chunk = toks.tolist()[: self.max_tokens - len(self.ids)]
        end = len(chunk)
        for j, t in enumerate(chunk):
            if t in self.eos:
                end, self.finish = j, "stop"
                break
        stop_at = self._find_stop(chunk[:end])
        if stop_at is not None:
            end = stop_at + 1
        if self.monitor is not None and fs is not None:
            last = stop_at if stop_at is not None else end  # the stop token ends it before the monitor sees it
            for j in range(last):
                if self.monitor(self.index, len(self.ids) + j, self._stat(chunk[j], fs[j], tops, j)):
                    end, stop_at, self.finish = j + 1, None, "monitor"
                    self._cut = None
                    break
        self.ids.extend(chunk[:end])
        if fs is not None and self.with_stats:
            self._f.append(fs[:end])
            if tops is not None:
                self._top.append(tops[:end])
        if stop_at is not None:
            self.finish = "stop"
        if self.finish is None and len(self.ids) >= self.max_tokens:
            self.finish = "length"
        return self.finish is not None

    def _find_stop(self, chunk: list[int]) -> int | None:
        """Index in ``chunk`` of the token that completes a stop string (None if none does)."""
        if not self.stop or not chunk:
            return None
        longest = max(map(len, self.stop))
        before = len(self._text)
        text = self.texts.decode(self.ids + chunk)
        start = max(0, before - longest + 1)
        if not any(text.find(s, start) >= 0 for s in self.stop):
            self._text = text
            return None
        for j in range(len(chunk)):  # the first prefix that contains a stop string
            prefix = self.texts.decode(self.ids + chunk[: j + 1])
            hits = [h for h in (prefix.find(s, start) for s in self.stop) if h >= 0]
            if hits:
                self._cut = prefix[: min(hits)]
                return j
        return None  # decoding the whole differs from its prefixes (merged bytes): keep going

    def _stat(self, tok: int, f: np.ndarray, tops: np.ndarray | None, j: int) -> TokenStat:
        vals = f.tolist()
        top: tuple[tuple[str, float], ...] = ()
        if tops is not None:
            ids = tops[j].tolist()
            top = tuple((self.texts[i], lp) for i, lp in zip(ids, vals[3:]) if lp > -math.inf)
        return TokenStat(self.texts[tok], vals[0], top, vals[1], vals[2])

    def text(self) -> str:
        if self.finish == "stop" and self._cut is not None:
            return self._cut
        return self.texts.decode(self.ids)

    def stats(self) -> tuple[TokenStat, ...] | None:
        """Per-token statistics (None when not kept)."""
        if not self.with_stats:
            return None
        if not self._f:
            return ()
        f = np.concatenate(self._f).tolist()
        tops = np.concatenate(self._top).tolist() if self._top else None
        texts = self.texts
        texts.fill(self.ids + ([i for row in tops for i in row] if tops is not None else []))
        cache = texts._cache
        out = []
        for j, t in enumerate(self.ids):
            v = f[j]
            top = () if tops is None else tuple((cache[i], lp) for i, lp in zip(tops[j], v[3:]) if lp > -math.inf)
            out.append(TokenStat(cache[t], v[0], top, v[1], v[2]))
        return tuple(out)
