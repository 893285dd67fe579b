"""Latent-layer consistency signals: read the model's hidden states, not just its text or token
probabilities (the third layer of self-feedback in the survey, arXiv 2407.14507).

| name | value | cost |
|---|---|---|
| ``logit-lens`` | ``1 - earliest``: how early in depth the final answer's first token becomes top-1 and stays so | one prefill up to the answer |
| ``logit-lens-stability`` | share of the last quarter of layers where that token is top-1 | the same pass (cached: free after ``logit-lens``) |
| ``probe`` (``probe:PATH``) | a fitted linear probe's p(right) from the last completion token's hidden state | one prefill of prompt + completion |

The logit lens (nostalgebraist 2020; Belrose et al., arXiv 2303.08112) projects each layer's residual
stream through the final norm and the LM head. ``earliest`` is the first layer (as a fraction of depth,
0 = the first block) from which the answer token is top-1 through the last layer; 1.0 when the last
layer itself does not rank it first (a sampled, non-argmax token). Both need the ``hf`` backend; each
teacher-forced pass is charged to the Meter (``calls=1`` and its prompt tokens) under the signal's stage.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinktwice.errors import CapabilityError, ConfigError
from thinktwice.lm.meter import Meter
from thinktwice.tasks.base import Query
from thinktwice.types import Candidate, Usage

__all__ = ["LogitLens", "LogitLensStability", "ProbeSignal", "answer_offset", "lens_scores"]

log = logging.getLogger(__name__)


def lens_scores(top1: np.ndarray, target: int, last_frac: float = 0.25) -> tuple[float, float]:
    """(earliest fraction, stability) from per-layer top-1 ids (layers 1..L, in order) and the answer token.

    earliest = ``i / L`` for the first 0-based layer index ``i`` from which every layer ranks ``target``
    first (1.0 if the last one does not); stability = share of the last ``max(1, round(last_frac * L))``
    layers that rank it first.
    """
    hits = np.asarray(top1) == target
    n = hits.shape[0]
    if n == 0:
        return math.nan, math.nan
    k = max(1, round(last_frac * n))
    stability = float(hits[-k:].mean())
    if not hits[-1]:
        return 1.0, stability
    misses = np.flatnonzero(~hits)
    first = int(misses[-1]) + 1 if misses.size else 0
    return first / n, stability


def answer_offset(query: Query, candidate: Candidate) -> int | None:
    """Character offset of the final answer in the candidate's text: the last occurrence of the extracted
    answer (None when there is no answer or it is not written verbatim)."""
    text = candidate.sample.text
    ans = candidate.answer if candidate.answer is not None else query.answers.extract(text)
    if not ans:
        return None
    at = text.rfind(ans)
    if at < 0:
        at = text.rfind(ans.strip())
    return at if at >= 0 else None


def _latent_backend(lm: Meter | None, signal: str) -> Any:
    backend = getattr(lm, "backend", lm)
    if backend is None or not hasattr(backend, "hidden_states") or not hasattr(backend, "logit_lens"):
        name = getattr(backend, "name", "none")
        raise CapabilityError(f"signal {signal!r} reads hidden states; backend {name!r} does not expose them. "
                              "Use --backend hf:PATH (the transformers backend).")
    return backend


class LogitLens:
    """``1 - earliest`` (see the module docstring): higher = the answer was settled earlier in depth."""

    name = "logit-lens"
    requires = frozenset({"hidden_states"})
    needs_model = True

    def __init__(self, last_frac: float = 0.25, stage: str | None = None) -> None:
        if not 0 < last_frac <= 1:
            raise ConfigError(f"last_frac must be in (0, 1], got {last_frac}")
        self.last_frac = last_frac
        self.stage = stage or self.name

    def value(self, earliest: float, stability: float) -> float:
        return 1.0 - earliest

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        backend = _latent_backend(lm, self.name)
        out = []
        for c in candidates:
            at = answer_offset(query, c)
            if at is None:
                out.append(math.nan)
                continue
            try:
                res = await backend.logit_lens(query.prompt, c.sample.text, at)
            except ConfigError as e:  # e.g. the answer is the very first token
                log.debug("%s: no lens for a candidate: %s", self.name, e)
                out.append(math.nan)
                continue
            if not res.cached:  # a cached lens ran no forward pass: nothing to bill
                lm.charge(Usage(calls=1, prompt_tokens=res.prompt_tokens), self.stage)
            out.append(self.value(*lens_scores(res.top1, res.target, self.last_frac)))
        return out


class LogitLensStability(LogitLens):
    """Share of the last quarter of layers whose lens ranks the answer token first."""

    name = "logit-lens-stability"

    def value(self, earliest: float, stability: float) -> float:
        return stability


class ProbeSignal:
    """p(right) from a probe fitted by ``thinktwice probe fit`` (``path``: its ``.npz``)."""

    name = "probe"
    requires = frozenset({"hidden_states"})
    needs_model = True

    def __init__(self, path: str | None = None, stage: str = "probe") -> None:
        from thinktwice.eval.probe import Probe

        if path is None:
            raise ConfigError("signal 'probe' needs a fitted probe: --signals probe:PATH "
                              "(fit one with `thinktwice probe fit`)")
        self.probe = Probe.load(path)
        self.name = f"probe:{Path(path).stem}"  # scores of different probes are stored apart
        self.stage = stage

    async def score(self, query: Query, candidates: Sequence[Candidate], lm: Meter) -> list[float]:
        backend = _latent_backend(lm, self.name)
        if self.probe.model != backend.model:
            log.warning("probe was fitted on %r; scoring with %r", self.probe.model, backend.model)
        out = []
        for c in candidates:
            if not c.sample.text:
                out.append(math.nan)
                continue
            hs = await backend.hidden_states(query.prompt, c.sample.text, layers=[self.probe.layer], positions=[-1])
            lm.charge(Usage(calls=1, prompt_tokens=hs.prompt_tokens), self.stage)
            out.append(float(self.probe.predict(hs.states[0, :1])[0]))
        return out
