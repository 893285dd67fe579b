"""Step-level tree search over newline-delimited reasoning steps: beam search and MCTS (METHODS §9).

Split after llm-reasoners (STYLE.md): a :class:`StepExpander` proposes next steps (continuations of
the partial solution that stop at a newline, through ``Prompt.with_prefix``), a search (beam or
MCTS) picks what to expand, and a :class:`StepValue` scores partial solutions with self-evaluation:
``"token-confidence"`` (the step's mean token probability, ``exp(mean logprob)``, no extra call) or
any registered signal, e.g. ``"p-true"`` asked about the partial solution (one call per node).

Limits follow MCTS-DPO (Xie et al., arXiv 2405.00451; §9.1): ``n_actions = 2`` proposals per
expansion, step length <= 128 tokens, temperature decayed by ``0.75 ** depth``, PUCT selection
``Q + w_exp · π · sqrt(N(s)) / (1 + N(s, a))`` with ``w_exp = 1`` and ``π`` the proposals' normalised
step probabilities, 64 iterations. A step that states an explicit final answer (``#### X``,
``\\boxed{}``, "The answer is X") or is empty ends a path; at ``max_depth`` the expansion writes the
rest of the solution in one go, so every path ends within ``max_depth`` steps. Gold answers are
never used: terminal values are self-evaluations too. The answer is the best-valued terminal path.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from thinktwice.errors import CapabilityError, ConfigError, ContextLengthExceeded
from thinktwice.lm.meter import BudgetExhausted
from thinktwice.signals.token_stats import path_prob
from thinktwice.strategies.base import BaseStrategy, RunContext, Verdict
from thinktwice.strategies.scoring import SignalSpec, check_signal, resolve_signal
from thinktwice.tasks.extract import marked_answer
from thinktwice.types import Candidate, Sample

__all__ = ["MCTS", "Node", "StepBeamSearch", "StepExpander", "StepValue", "puct"]

T = TypeVar("T")


@dataclass(eq=False)
class Node:
    """A partial solution: ``text`` is every step so far, each ending in a newline."""

    text: str
    step: str = ""
    depth: int = 0
    prior: float = 1.0
    terminal: bool = False
    answer: str | None = None
    parent: Node | None = None
    sample: Sample | None = None
    children: list[Node] = field(default_factory=list)
    expanded: bool = False
    value: float | None = None
    visits: int = 0
    total: float = 0.0

    @property
    def q(self) -> float:
        return self.total / self.visits if self.visits else 0.0

    def path_values(self) -> list[float]:
        out, n = [], self
        while n.parent is not None:
            out.append(n.value if n.value is not None else 0.0)
            n = n.parent
        return out[::-1]

    def score(self) -> float:
        """Mean self-evaluated value along the path (the beam's ranking key)."""
        v = self.path_values()
        return sum(v) / len(v) if v else 0.0


def puct(parent: Node, child: Node, w_exp: float) -> float:
    """``Q(s,a) + w_exp · π(a|s) · sqrt(N(s)) / (1 + N(s,a))`` (MCTS-DPO's selection rule)."""
    return child.q + w_exp * child.prior * math.sqrt(parent.visits) / (1 + child.visits)


@dataclass(frozen=True)
class StepExpander:
    """Proposes ``n_actions`` next steps of a partial solution in one call (stage ``expand``)."""

    n_actions: int = 2
    temperature: float = 0.7
    decay: float = 0.75
    max_step_tokens: int = 128
    max_depth: int = 8
    final_max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.n_actions < 1 or self.max_step_tokens < 1 or self.max_depth < 1:
            raise ConfigError("n_actions, max_step_tokens and max_depth must be >= 1")
        if not 0 < self.decay <= 1 or self.temperature < 0:
            raise ConfigError(f"decay must be in (0, 1] and temperature >= 0, got {self.decay}, {self.temperature}")

    async def expand(self, ctx: RunContext, node: Node) -> list[Node]:
        last = node.depth + 1 >= self.max_depth
        params = ctx.query.params.replace(
            temperature=self.temperature * self.decay**node.depth,
            max_tokens=(self.final_max_tokens or ctx.query.params.max_tokens) if last else self.max_step_tokens,
            stop=() if last else ("\n",),
            logprobs=True,
        )
        prompt = ctx.query.prompt.with_prefix(ctx.query.prompt.assistant_prefix + node.text)
        cands = await ctx.sample(self.n_actions, params, prompt=prompt, stage="expand")
        children: dict[str, Node] = {}
        for c in cands:
            step = c.sample.text.strip("\n")
            if step in children:  # identical proposals are one action with their summed probability
                children[step].prior += _step_prob(c.sample)
                continue
            text = node.text + step + "\n"
            terminal = last or not step.strip() or marked_answer(step) is not None
            children[step] = Node(text=text, step=step, depth=node.depth + 1, prior=_step_prob(c.sample),
                                  terminal=terminal, answer=ctx.query.answers.extract(text) if terminal else None,
                                  parent=node, sample=c.sample)
        kids = list(children.values())
        total = sum(k.prior for k in kids)
        for k in kids:
            k.prior = k.prior / total if total > 0 else 1.0 / len(kids)
        node.children.extend(kids)
        node.expanded = True
        return kids


def _step_prob(s: Sample) -> float:
    return path_prob(s.tokens) if s.tokens else 1.0


@dataclass(frozen=True)
class StepValue:
    """Self-evaluated value of partial solutions in [0, 1]: ``"token-confidence"`` or a signal name."""

    signal: SignalSpec = "token-confidence"

    def check(self, ctx: RunContext) -> None:
        if self.signal == "token-confidence":
            if not ctx.meter.capabilities.logprobs:
                raise CapabilityError("value 'token-confidence' needs token logprobs; use value='p-true'")
        else:
            check_signal(resolve_signal(self.signal), ctx)

    async def __call__(self, ctx: RunContext, nodes: Sequence[Node]) -> list[float]:
        if not nodes:
            return []
        if self.signal == "token-confidence":
            return [_step_prob(n.sample) if n.sample is not None else 0.0 for n in nodes]
        sig = resolve_signal(self.signal)
        cands = [Candidate(Sample(text=n.text.rstrip("\n")), None) for n in nodes]
        scores = await sig.score(ctx.query, cands, ctx.meter)
        return [0.0 if math.isnan(s) else float(s) for s in scores]


async def _gather(aws: Sequence[Awaitable[T]]) -> tuple[list[T | None], bool]:
    """Run concurrently; a BudgetExhausted result becomes None and sets the flag."""

    async def safe(a: Awaitable[T]) -> T | None:
        try:
            return await a
        except BudgetExhausted:
            return None

    res = await asyncio.gather(*(safe(a) for a in aws))
    return list(res), any(r is None for r in res)


@dataclass(frozen=True)
class _TreeSearch(BaseStrategy):
    n_actions: int = 2
    max_depth: int = 8
    max_step_tokens: int = 128
    temperature: float = 0.7
    decay: float = 0.75
    value: SignalSpec = "token-confidence"

    def __post_init__(self) -> None:
        self.expander()  # validates the expander's settings

    def expander(self) -> StepExpander:
        return StepExpander(self.n_actions, self.temperature, self.decay, self.max_step_tokens, self.max_depth)

    def _prepare(self, ctx: RunContext) -> tuple[StepExpander, StepValue]:
        if not ctx.meter.capabilities.continuation:
            raise CapabilityError(f"{self.name} needs a backend that continues an assistant prefix; "
                                  f"{ctx.meter.name!r} cannot")
        val = StepValue(self.value)
        val.check(ctx)
        return self.expander(), val

    async def _expand_and_value(self, ctx: RunContext, exp: StepExpander, val: StepValue,
                                node: Node) -> list[Node]:
        try:
            kids = await exp.expand(ctx, node)
        except ContextLengthExceeded:
            # the partial solution fills the model's context: it cannot grow, so it ends here
            node.terminal, node.answer = True, ctx.query.answers.extract(node.text)
            ctx.note("context-full", depth=node.depth, answer=node.answer)
            return []
        for k, v in zip(kids, await val(ctx, kids)):
            k.value = v
        return kids

    @staticmethod
    def _verdict(ctx: RunContext, best: Node | None, explored: list[Node], stopped: str, key: str) -> Verdict:
        leaves = [n for n in explored if n.terminal]
        cands = [Candidate(n.sample or Sample(text=n.text), n.answer, {key: n.score(), "q": n.q}, stage="path")
                 for n in leaves]
        if best is None:
            return Verdict(None, None, cands, None, stopped_because=stopped)
        if best.terminal and best in leaves:
            chosen = leaves.index(best)
        else:
            cands.append(Candidate(Sample(text=best.text), ctx.query.answers.extract(best.text), {}, stage="path"))
            chosen = len(cands) - 1
        answer = cands[chosen].answer
        ctx.note("select", answer=answer, path=best.text, score=best.score(), q=best.q)
        return Verdict(answer, best.score(), cands, chosen, stopped_because=stopped,
                       text=best.text, votes={answer: best.score()} if answer is not None else {})


@dataclass(frozen=True)
class StepBeamSearch(_TreeSearch):
    """Keep the ``beam_width`` partial solutions with the best mean step value at every depth."""

    name: ClassVar[str] = "step-beam"
    beam_width: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beam_width < 1:
            raise ConfigError(f"beam_width must be >= 1, got {self.beam_width}")

    async def decide(self, ctx: RunContext) -> Verdict:
        exp, val = self._prepare(ctx)
        beams = [Node(text="")]
        explored: list[Node] = []
        finished: list[Node] = []
        stopped = "done"
        for depth in range(self.max_depth):
            results, short = await _gather([self._expand_and_value(ctx, exp, val, b) for b in beams])
            kids = [k for r in results if r for k in r]
            explored.extend(kids)
            finished.extend(b for b in beams if b.terminal and b.parent is not None)  # context full
            finished.extend(k for k in kids if k.terminal)
            open_ = sorted((k for k in kids if not k.terminal), key=lambda k: -k.score())
            ctx.note("depth", depth=depth + 1, expanded=len(beams), proposals=len(kids),
                     finished=sum(k.terminal for k in kids),
                     kept=[round(k.score(), 4) for k in open_[: self.beam_width]])
            if short:
                stopped = "budget"
                break
            beams = open_[: self.beam_width]
            if not beams:
                break
        pool = finished or beams
        best = max(pool, key=lambda n: n.score()) if pool else None
        return self._verdict(ctx, best, explored, stopped, "beam-score")


@dataclass(frozen=True)
class MCTS(_TreeSearch):
    """Monte Carlo tree search with PUCT over reasoning steps; values back up as running means."""

    name: ClassVar[str] = "mcts"
    n_iters: int = 64
    w_exp: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_iters < 1 or self.w_exp < 0:
            raise ConfigError(f"n_iters must be >= 1 and w_exp >= 0, got {self.n_iters}, {self.w_exp}")

    async def decide(self, ctx: RunContext) -> Verdict:
        exp, val = self._prepare(ctx)
        root = Node(text="")
        explored: list[Node] = []
        stopped = "max-samples"
        for it in range(self.n_iters):
            node = root
            while node.expanded and node.children and not node.terminal:
                parent = node
                node = max(parent.children, key=lambda c: puct(parent, c, self.w_exp))
            if node.terminal:
                self._backup(node, node.value or 0.0)
                if self._solved(root):
                    stopped = "converged"
                    break
                continue
            try:
                kids = await self._expand_and_value(ctx, exp, val, node)
            except BudgetExhausted:
                stopped = "budget"
                break
            explored.extend(kids)
            for k in kids:
                self._backup(k, k.value or 0.0)
            if not kids:
                node.terminal = True
            ctx.note("iteration", it=it + 1, expanded=node.text[-80:], values=[round(k.value or 0, 4) for k in kids])
        leaves = [n for n in explored if n.terminal]
        best = max(leaves, key=lambda n: (n.q, n.visits)) if leaves else self._most_visited(root)
        return self._verdict(ctx, best, explored, stopped, "mcts-score")

    @staticmethod
    def _backup(node: Node | None, value: float) -> None:
        while node is not None:
            node.visits += 1
            node.total += value
            node = node.parent

    @staticmethod
    def _solved(root: Node) -> bool:
        """True when every path of the tree has reached a terminal node (nothing left to expand)."""
        stack = [root]
        while stack:
            n = stack.pop()
            if n.terminal:
                continue
            if not n.expanded or not n.children:
                return False
            stack.extend(n.children)
        return True

    @staticmethod
    def _most_visited(root: Node) -> Node | None:
        node = root
        while node.children:
            node = max(node.children, key=lambda c: (c.visits, c.q))
        return node if node is not root else None
