"""A pre-screen that keeps math-verify away from LaTeX whose evaluation could run unbounded.

sympy evaluates ``10^{10^{10}}`` or ``(10^{100})!`` eagerly, in one C-level big-integer call
that neither math-verify's SIGALRM nor a thread timeout can stop. :func:`math_verify_safe`
bounds, before anything is evaluated, the number of digits any value built from the text could
have; answers that fail the screen are compared structurally only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["MAX_CHARS", "MAX_DEPTH", "MAX_LOG10", "log10_bound", "math_verify_safe"]

MAX_CHARS = 512  # MATH/MATH-500 golds are at most 159 characters
MAX_DEPTH = 24  # bracket nesting; MATH golds nest at most 2 deep
MAX_LOG10 = 4000.0  # digits of the largest value the text may build (under the int<->str limit)

_TOKEN_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+|\\[A-Za-z]+|\\.|\s+|.", re.DOTALL)
_OPEN = {"{": "}", "(": ")", "[": "]"}
_CLOSE = frozenset("})]")
_LOG10_2 = math.log10(2)
# Commands that only arrange their arguments (the arguments are still bounded as factors).
_NEUTRAL = frozenset(
    r"\frac \dfrac \tfrac \cfrac \sqrt \cdot \times \div \pm \mp \left \right \big \Big \bigg "
    r"\Bigg \displaystyle \circ \degree \cup \cap \in \le \leq \ge \geq \ne \neq \lt \gt \to "
    r"\ldots \cdots \dots \begin \end \quad \qquad \mid \vert \lvert \rvert \lfloor \rfloor "
    r"\lceil \rceil \langle \rangle \overline \underline \hat \vec \bar \tilde".split()
)
_TEXT = frozenset(r"\text \textbf \textit \mathrm \mathbf \mbox \operatorname \textnormal".split())
_POWER_LIKE = frozenset(r"\binom \dbinom \tbinom".split())  # C(n, k) <= n^k
_EXP_LIKE = frozenset(r"\exp \sinh \cosh \tanh".split())  # <= 10^x
_FORBIDDEN = frozenset(r"\uparrow \Uparrow \underbrace \overbrace \def \newcommand".split())


class _Unsafe(Exception):
    """Raised inside the scan as soon as a bound is exceeded."""


def _pow(base: float, exponent: float) -> float:
    """log10 bound of ``b^e`` from the log10 bounds of ``b`` and ``e``: ``base * 10**exponent``."""
    if exponent > 300 or base * 10.0**exponent > MAX_LOG10:
        raise _Unsafe
    return base * 10.0**exponent


@dataclass
class _Scan:
    """One pass over the tokens; every factor's bound is at least log10(2), so bounds only grow."""

    tokens: list[str]
    pos: int = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def seq(self, depth: int, closer: str | None) -> float:
        """Sum of the factors' bounds up to ``closer`` (any closing bracket ends a group, as in
        the interval ``[0, 1)``)."""
        if depth > MAX_DEPTH:
            raise _Unsafe
        total = 0.0
        while (tok := self.peek()) is not None:
            if tok in _CLOSE:
                self.pos += 1
                if closer is not None:
                    break
                continue  # a stray closer at the top level
            if tok == r"\choose":  # {n \choose k}: bound like n^k
                self.pos += 1
                total = _pow(max(total, _LOG10_2), self.atom(depth))
                continue
            total += self.factor(depth)
            if total > MAX_LOG10:
                raise _Unsafe
        return total

    def atom(self, depth: int) -> float:
        """The bound of the next atom: a number, a bracketed group, a command, a letter."""
        tok = self.peek()
        if tok is None:
            return 0.0
        if depth > MAX_DEPTH:
            raise _Unsafe
        self.pos += 1
        if tok in _OPEN:
            return max(self.seq(depth + 1, _OPEN[tok]), _LOG10_2)
        if tok[0].isdecimal() or (tok[0] == "." and len(tok) > 1):
            return _literal_bound(tok)
        if tok in _FORBIDDEN:
            raise _Unsafe
        if tok in _TEXT:
            if self.peek() == "{":
                self.atom(depth + 1)
            return 1.0
        if tok in _POWER_LIKE:
            n = self.atom(depth + 1)
            return _pow(max(n, _LOG10_2), self.atom(depth + 1))
        if tok in _EXP_LIKE:
            return _pow(1.0, self.atom(depth + 1))
        if tok in _NEUTRAL or (len(tok) == 1 and not tok.isalpha()):
            return 0.0  # operators, punctuation, escaped characters ("\!", "\{")
        return 1.0  # a variable, a constant (\pi, e) or a function name: |value| <= 10 for bounding

    def factor(self, depth: int) -> float:
        """An atom and its postfixes: ``^`` (towers read right-associatively), ``_`` and ``!``."""
        value = self.atom(depth)
        exponents: list[float] = []
        while (tok := self.peek()) in ("^", "_", "!", "'"):
            self.pos += 1
            if tok == "^":
                exponents.append(self.exponent(depth))
                continue
            value = _apply(value, exponents)
            exponents = []
            if tok == "_":
                value += self.atom(depth)  # subscripts are not evaluated, but must be bounded
            elif tok == "!":
                n = max(value, _LOG10_2)
                value = _pow(n, n)  # log10(n!) <= n * log10(n): bound n^n
        return _apply(value, exponents)

    def exponent(self, depth: int) -> float:
        """A superscript: one group, one number, or a command with its bracketed arguments."""
        tok = self.peek()
        bound = self.atom(depth)
        if tok is not None and tok.startswith("\\") and tok not in _OPEN:
            while self.peek() in ("{", "["):
                bound += self.atom(depth)
        return max(bound, _LOG10_2)


def _apply(base: float, exponents: list[float]) -> float:
    if not exponents:
        return base
    tower = exponents[-1]
    for e in reversed(exponents[:-1]):
        tower = _pow(e, tower)
    return _pow(max(base, _LOG10_2), tower)


def _literal_bound(tok: str) -> float:
    """log10 of ``max(|v|, 1/|v|, 2)`` for a literal; long ones by their digit count (a literal
    is never converted to an int, so no digit limit applies)."""
    whole, _, frac = tok.partition(".")
    whole = whole.lstrip("0")
    if len(whole) > 15:
        return float(len(whole))
    if whole:
        return max(math.log10(float(whole)), _LOG10_2)
    zeros = len(frac) - len(frac.lstrip("0"))
    return max(float(zeros + 1), _LOG10_2) if frac.strip("0") else _LOG10_2


def log10_bound(latex: str) -> float | None:
    """An upper bound on log10 of any value built from ``latex``, or None when it exceeds
    :data:`MAX_LOG10` or the text nests deeper than :data:`MAX_DEPTH`.

    >>> log10_bound("2^{10}") is not None, log10_bound("10^{10^{10}}")
    (True, None)
    """
    scan = _Scan([t for t in _TOKEN_RE.findall(latex) if not t.isspace()])
    try:
        return scan.seq(0, None)
    except _Unsafe:
        return None


def math_verify_safe(latex: str) -> bool:
    """True when ``latex`` is short, printable, shallow and builds no value past
    :data:`MAX_LOG10` digits, so math-verify may parse and compare it."""
    if len(latex) > MAX_CHARS:
        return False
    if not latex.isprintable() and any(not c.isprintable() and c not in "\t\n\r" for c in latex):
        return False  # NUL bytes and other control characters
    return log10_bound(latex) is not None
