"""Synthetic multi-step arithmetic word problems in GSM8K format, with several valid solution orders.

A problem is a short story: someone starts with a number of things, then gains or loses some in
``steps`` events; ``distractors`` extra sentences mention numbers that do not matter. The worked
solution writes one equation per step and ends with ``#### N`` (as GSM8K does)::

    Ava has 7 pens. She buys 5 more pens. She gives away 3 pens. How many pens does Ava have now?
    7+5=12. 12-3=9.
    #### 9

The same problem has several valid solution orders (story order, all gains first, gains and losses
summed separately), and training data draws one at random. Errors made along different orders are
less correlated than errors along one canonical path, which gives self-consistency room to help
(Wang et al., arXiv 2203.11171).

Splits are disjoint by construction: a problem belongs to the test split exactly when a hash of its
question text falls in the test bucket, and each split's generator keeps only its own problems.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from thinktwice.errors import ConfigError

__all__ = ["ORDERS", "WORDS", "ArithProblem", "Difficulty", "generate", "render_solution", "split_of"]

NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kim", "Leo", "Mia",
         "Ned", "Omar", "Pia", "Raj", "Sara", "Tom", "Uma", "Vic", "Wes", "Zoe")
ITEMS = ("apples", "pens", "coins", "books", "cards", "shells", "stamps", "marbles", "eggs", "cups",
         "rocks", "socks", "toys", "seeds", "beads", "nuts")
GAIN = ("buys {n} more {item}", "finds {n} {item}", "gets {n} {item} from a friend", "makes {n} more {item}",
        "wins {n} {item}")
LOSS = ("gives away {n} {item}", "loses {n} {item}", "sells {n} {item}", "uses {n} {item}",
        "drops {n} {item}")
DISTRACT = ("{other} has {n} {item2}.", "{other} wants {n} {item2}.", "The shop has {n} {item2}.",
            "It takes {n} minutes to walk home.", "{other} is {n} years older.")
ORDERS = ("story", "gains-first", "grouped")
"""Solution orders: ``story`` follows the events; ``gains-first`` adds every gain, then takes away
every loss; ``grouped`` sums the gains and the losses separately, then combines the two totals."""

WORDS = tuple(sorted({
    w for phrase in (*NAMES, *ITEMS, *GAIN, *LOSS, *DISTRACT,
                     "has How many does have now She He gains loses total more minutes years older")
    for w in phrase.replace("{n}", " ").replace("{item}", " ").replace("{item2}", " ")
    .replace("{other}", " ").replace(".", " ").replace("?", " ").split()
}))
"""Every word the generator writes (the tokenizer gives each its own token)."""


@dataclass(frozen=True)
class Difficulty:
    """Difficulty knobs.

    ``steps``: gain/loss events per problem (a range ``min_steps..steps`` when ``min_steps`` is
    set). ``max_operand``: largest number in an event (single digits keep carries learnable).
    ``distractors``: irrelevant sentences with numbers. ``start_max``: largest starting amount.
    """

    steps: int = 7
    min_steps: int | None = None
    max_operand: int = 9
    distractors: int = 1
    start_max: int = 9
    loss_prob: float = 0.4

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 20:
            raise ConfigError(f"steps must be in 1..20, got {self.steps}")
        if self.min_steps is not None and not 1 <= self.min_steps <= self.steps:
            raise ConfigError(f"min_steps must be in 1..steps, got {self.min_steps}")
        if not 1 <= self.max_operand <= 999 or not 1 <= self.start_max <= 999:
            raise ConfigError("max_operand and start_max must be in 1..999")
        if not 0 <= self.distractors <= 5:
            raise ConfigError(f"distractors must be in 0..5, got {self.distractors}")
        if not 0 <= self.loss_prob <= 1:
            raise ConfigError(f"loss_prob must be in [0, 1], got {self.loss_prob}")


@dataclass(frozen=True)
class ArithProblem:
    """One problem: its question, the signed events, and the answer."""

    question: str
    start: int
    events: tuple[int, ...]  # signed amounts, in story order
    answer: int
    meta: dict[str, int] = field(default_factory=dict)

    def solution(self, order: str = "story") -> str:
        return render_solution(self.start, self.events, order)


def _eq(a: int, op: str, b: int) -> tuple[str, int]:
    r = a + b if op == "+" else a - b
    return f"{a}{op}{b}={r}.", r


def render_solution(start: int, events: tuple[int, ...], order: str = "story") -> str:
    """The worked solution in ``order`` (see :data:`ORDERS`), ending with the ``#### N`` line."""
    parts: list[str] = []
    if order == "story":
        total = start
        for e in events:
            s, total = _eq(total, "+" if e >= 0 else "-", abs(e))
            parts.append(s)
    elif order == "gains-first":
        total = start
        for e in [e for e in events if e >= 0] + [e for e in events if e < 0]:
            s, total = _eq(total, "+" if e >= 0 else "-", abs(e))
            parts.append(s)
    elif order == "grouped":
        gains = [e for e in events if e >= 0]
        losses = [-e for e in events if e < 0]
        total = start
        for name, group in (("gains", gains), ("loses", losses)):
            if len(group) > 1:
                acc = group[0]
                for g in group[1:]:
                    s, acc = _eq(acc, "+", g)
                    parts.append(s)
                group[:] = [acc]
        if gains:
            s, total = _eq(total, "+", gains[0])
            parts.append(s)
        if losses:
            s, total = _eq(total, "-", losses[0])
            parts.append(s)
    else:
        raise ConfigError(f"unknown solution order {order!r}; choose from {', '.join(ORDERS)}")
    return " ".join(parts) + f"\n#### {total}"


def split_of(question: str, test_fraction: float = 0.1) -> str:
    """``"test"`` when the question's hash falls in the test bucket, else ``"train"``."""
    h = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "big")
    return "test" if (h % 10_000) < test_fraction * 10_000 else "train"


def _one(rng: random.Random, d: Difficulty) -> ArithProblem:
    name = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    pron = "She" if name in ("Ava", "Cleo", "Eva", "Hana", "Ivy", "Kim", "Mia", "Pia", "Sara", "Uma", "Zoe") \
        else "He"
    k = d.steps if d.min_steps is None else rng.randint(d.min_steps, d.steps)
    start = rng.randint(1, d.start_max)
    total, events = start, []
    for _ in range(k):
        n = rng.randint(1, d.max_operand)
        if rng.random() < d.loss_prob and total - n >= 0:
            events.append(-n)
            total -= n
        else:
            events.append(n)
            total += n
    sentences = [f"{name} has {start} {item}."]
    for e in events:
        tmpl = rng.choice(GAIN if e >= 0 else LOSS)
        sentences.append(f"{pron} " + tmpl.format(n=abs(e), item=item) + ".")
    for _ in range(d.distractors):
        other = rng.choice([x for x in NAMES if x != name])
        item2 = rng.choice([x for x in ITEMS if x != item])
        pos = rng.randint(1, len(sentences))
        sentences.insert(pos, rng.choice(DISTRACT).format(other=other, n=rng.randint(1, d.max_operand),
                                                          item2=item2))
    q = " ".join(sentences) + f" How many {item} does {name} have now?"
    return ArithProblem(q, start, tuple(events), total, {"steps": k})


def generate(seed: int, difficulty: Difficulty | None = None, split: str | None = None,
             test_fraction: float = 0.1) -> Iterator[ArithProblem]:
    """An endless, seeded stream of problems; with ``split`` only that split's problems."""
    if split not in (None, "train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    d = difficulty or Difficulty()
    rng = random.Random(f"arith/{seed}/{split}")
    while True:
        p = _one(rng, d)
        if split is None or split_of(p.question, test_fraction) == split:
            yield p
