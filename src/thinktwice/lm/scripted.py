"""ScriptedBackend: a deterministic, programmable fake model for tests.

Replies come from (in order of precedence) a ``handler`` function, per-prompt ``rules`` keyed by a
substring of the prompt, or a default ``replies`` queue. A reply is a string or a :class:`Reply`
that can also set per-token confidence, latency, finish reason or an error to raise. Token
statistics are derived from a synthetic distribution in which the chosen token has probability
``confidence`` and the rest is spread evenly over ``vocab_size - 1`` tokens, so every statistic
can be computed by hand (see :func:`synthetic_stat`).

>>> import asyncio
>>> from thinktwice.types import Prompt, SamplingParams
>>> b = ScriptedBackend(rules={"2+2": ["4", "5"]})
>>> [s.text for s in asyncio.run(b.sample(Prompt.user("2+2?"), SamplingParams(), n=2))]
['4', '5']
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import re
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from thinktwice.errors import ConfigError, ScriptExhausted
from thinktwice.lm.base import TokenMonitor
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, TokenStat, Usage

__all__ = ["ScriptedBackend", "Reply", "resolve_handler", "synthetic_stat", "tokenize"]

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """Split into word tokens that keep their leading whitespace (``"".join`` gives the text back)."""
    return _TOKEN_RE.findall(text)


def synthetic_stat(token: str, confidence: float, vocab_size: int, top_k: int) -> TokenStat:
    """The TokenStat of ``token`` drawn with probability ``confidence`` from a V-token distribution
    whose other V-1 tokens share the remaining mass equally."""
    c = min(max(confidence, 1e-12), 1.0)
    v = vocab_size
    rest = (1.0 - c) / (v - 1)
    lp_c = math.log(c)
    lp_r = math.log(rest) if rest > 0 else -math.inf
    entropy = -c * lp_c - ((v - 1) * rest * lp_r if rest > 0 else 0.0)
    # KL(U || p) = -log V - (1/V) sum_j log p_j
    sc = (-math.log(v) - (lp_c + (v - 1) * lp_r) / v) if rest > 0 else math.inf
    alts = [(f"<alt{i}>", lp_r) for i in range(max(0, top_k - 1))] if rest > 0 else []
    top = tuple([(token, lp_c)] + alts) if top_k > 0 else ()
    return TokenStat(token=token, logprob=lp_c, top=top, entropy=entropy, self_certainty=sc)


@dataclass(frozen=True)
class Reply:
    """One scripted reply.

    ``confidence`` is the chosen-token probability of every token, or one value per token.
    ``error`` is raised instead of replying. ``delay`` is latency in seconds.
    """

    text: str = ""
    confidence: float | Sequence[float] = 0.9
    finish_reason: str = "stop"
    delay: float = 0.0
    error: BaseException | None = None
    seed: int | None = field(default=None, compare=False)


ReplyLike = "Reply | str"
Handler = Callable[[Prompt, SamplingParams, int], "Reply | str"]

_TARGET_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_HANDLER_FORM = "a function of your own taking (prompt, params, index) and returning a str or Reply"


def resolve_handler(handler: Handler | str) -> Handler:
    """The handler itself, or the one a ``"module:function"`` string names (how a run spec, the CLI's
    ``-B handler=...`` and every Ray worker name it), imported.

    A named handler must be a Python function defined in the module named (not re-exported into it),
    outside the standard library, whose signature takes ``(prompt, params, index)``: ``os:system`` and
    other builtins are refused before anything is imported.
    """
    if not isinstance(handler, str):
        if not callable(handler):
            raise ConfigError(f"handler must be {_HANDLER_FORM}, got {type(handler).__name__}")
        _check_handler_signature(handler, repr(handler))
        return handler
    if not _TARGET_RE.fullmatch(handler):
        raise ConfigError(f"handler {handler!r} is not of the form 'module:function' ({_HANDLER_FORM})")
    module_name, _, attr = handler.partition(":")
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        raise ConfigError(f"handler {handler!r} is refused: {module_name!r} is a standard-library module; "
                          f"a handler must be {_HANDLER_FORM}")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"handler {handler!r}: cannot import module {module_name!r} ({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"handler {handler!r}: module {module_name!r} has no {attr!r}") from None
    fn = getattr(obj, "__func__", obj)  # a bound or class method: check the function underneath
    if not inspect.isfunction(fn):
        raise ConfigError(f"handler {handler!r} is refused: it is a {type(obj).__name__}, not {_HANDLER_FORM}")
    if fn.__module__ != module_name:
        raise ConfigError(f"handler {handler!r} is refused: it is defined in {fn.__module__!r}, not in "
                          f"{module_name!r}; name the module that defines it")
    _check_handler_signature(obj, handler)  # type: ignore[arg-type]
    return obj  # type: ignore[return-value]


def _check_handler_signature(fn: Callable[..., object], label: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable object without a readable signature: trust the caller
        return
    try:
        sig.bind(None, None, 0)
    except TypeError:
        raise ConfigError(f"handler {label} takes {sig}, not (prompt, params, index)") from None


class ScriptedBackend:
    """Deterministic fake backend; records every call in ``calls`` as (prompt, params, n)."""

    name = "scripted"

    def __init__(
        self,
        replies: Sequence[Reply | str] = (),
        *,
        rules: Mapping[str, Sequence[Reply | str]] | None = None,
        handler: Handler | str | None = None,
        cycle: bool = False,
        latency: float = 0.0,
        vocab_size: int = 100,
        model: str = "scripted",
        capabilities: Capabilities | Mapping[str, object] | None = None,
    ) -> None:
        from thinktwice.registry import check_options

        self.model = model
        if isinstance(capabilities, Mapping):  # from the CLI: -B capabilities='{"native_n": false}'
            check_options("scripted backend", "capabilities", Capabilities, capabilities)
            capabilities = Capabilities(**capabilities)  # type: ignore[arg-type]
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be at least 2, got {vocab_size}")
        if not latency >= 0 or math.isinf(latency):
            raise ConfigError(f"latency must be a finite number of seconds >= 0, got {latency}")
        self.capabilities = capabilities or Capabilities(
            logprobs=True, top_logprobs=5, full_vocab=True, native_n=True, prefix_sharing=False,
            continuation=True, monitor=True,
        )
        self.vocab_size = vocab_size
        self.latency = latency
        self.cycle = cycle
        self.handler = None if handler is None else resolve_handler(handler)
        self._default: deque[Reply | str] = deque(replies)
        self._default_all = list(replies)
        self._rules: dict[str, deque[Reply | str]] = {k: deque(v) for k, v in (rules or {}).items()}
        self._rules_all = {k: list(v) for k, v in (rules or {}).items()}
        self.calls: list[tuple[Prompt, SamplingParams, int]] = []

    # -- script ---------------------------------------------------------------------------------
    def add_rule(self, key: str, replies: Sequence[Reply | str]) -> None:
        self._rules[key] = deque(replies)
        self._rules_all[key] = list(replies)

    def _next(self, prompt: Prompt, params: SamplingParams, index: int) -> Reply:
        if self.handler is not None:
            r = self.handler(prompt, params, index)
            if not isinstance(r, (str, Reply)):
                raise ConfigError(f"scripted handler returned a {type(r).__name__}, not a str or Reply")
            return Reply(r) if isinstance(r, str) else r
        text = prompt.text()
        for key, queue in self._rules.items():
            if key in text:
                return self._pop(queue, self._rules_all[key], f"rule {key!r}")
        return self._pop(self._default, self._default_all, "default replies")

    def _pop(self, queue: deque[Reply | str], full: list[Reply | str], what: str) -> Reply:
        if not queue:
            if self.cycle and full:
                queue.extend(full)
            else:
                raise ScriptExhausted(f"scripted backend: no {what} left", backend=self.name, model=self.model)
        r = queue.popleft()
        return Reply(r) if isinstance(r, str) else r

    # -- Backend --------------------------------------------------------------------------------
    def count_tokens(self, prompt: Prompt) -> int:
        return len(tokenize(prompt.text()))

    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        self.calls.append((prompt, params, n))
        replies = [self._next(prompt, params, i) for i in range(n)]
        delay = max([self.latency] + [r.delay for r in replies])
        if delay:
            await asyncio.sleep(delay)
        for r in replies:
            if r.error is not None:
                raise r.error
        prompt_tokens = self.count_tokens(prompt)
        out = []
        for i, r in enumerate(replies):
            out.append(self._render(r, params, i, prompt_tokens, monitor))
        return out

    def _render(
        self, r: Reply, params: SamplingParams, i: int, prompt_tokens: int, monitor: TokenMonitor | None
    ) -> Sample:
        text, finish = r.text, r.finish_reason
        for s in params.stop:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        toks = tokenize(text)
        if len(toks) > params.max_tokens:
            toks, finish = toks[: params.max_tokens], "length"
        conf = r.confidence
        confs = [float(conf)] * len(toks) if isinstance(conf, (int, float)) else [float(c) for c in conf]
        if len(confs) < len(toks):  # pad a short per-token list with its last value
            confs = confs + [confs[-1] if confs else 0.9] * (len(toks) - len(confs))
        stats: list[TokenStat] = []
        for pos, (tok, c) in enumerate(zip(toks, confs)):
            st = synthetic_stat(tok, c, self.vocab_size, max(params.top_logprobs, 1 if params.logprobs else 0))
            stats.append(st)
            if monitor is not None and monitor(i, pos, st):
                finish = "monitor"
                break
        text = "".join(t.token for t in stats)
        usage = Usage(
            calls=1 if i == 0 else 0,
            prompt_tokens=prompt_tokens if i == 0 else 0,
            completion_tokens=len(stats),
        )
        seed = r.seed if r.seed is not None else (None if params.seed is None else params.seed + i)
        return Sample(
            text=text,
            tokens=tuple(stats) if params.logprobs else None,
            finish_reason=finish,
            usage=usage,
            model=self.model,
            seed=seed,
        )

    async def aclose(self) -> None:
        return None
