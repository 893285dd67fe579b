"""Answer equivalence: numeric comparison, LaTeX normalisation, and math-verify with a timeout.

Graders are total functions of two answer strings: any text gives a verdict, never an exception.
``None`` (no answer) is never equal to anything. Numbers compare exactly as rationals of any size
(:mod:`thinktwice.tasks.exactnum`). The math grader normalises cheaply first and asks math-verify
(HuggingFace) only when the normal forms differ and both answers pass the size pre-screen
(:mod:`thinktwice.tasks.mathscreen`); math-verify then runs under a timeout, so a pathological
expression can neither hang the process nor leak warnings into callers running with ``-W error``.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import warnings
from collections.abc import Callable
from fractions import Fraction

from thinktwice.errors import ConfigError
from thinktwice.tasks.exactnum import ExactNumber, int_to_str
from thinktwice.tasks.extract import parse_exact
from thinktwice.tasks.mathscreen import math_verify_safe

__all__ = [
    "GRADERS",
    "contains_equal",
    "exact_equal",
    "get_grader",
    "math_equal",
    "normalize_math",
    "number_canonical",
    "numeric_equal",
]

log = logging.getLogger(__name__)

# Relative tolerance for numeric answers: 0.333333 counts as 1/3, 18.0000001 as 18 (GSM8K-style
# answers are exact numbers; the tolerance absorbs rounding in printed decimals). Exact: numbers
# are compared as rationals, never as floats (a 309-digit answer overflows a float).
REL_TOL = Fraction(1, 10**6)
_MAX_DECIMAL_PLACES = 15  # canonical forms print terminating decimals up to this many places


def _fmt_number(x: ExactNumber) -> str:
    """``"1000"``, ``"0.5"``, ``"1/3"``; numbers past :data:`PLAIN_LOG10` as ``"1e10000000"``."""
    if not x.is_plain:
        return x.key()
    f = x.to_fraction()
    if f.denominator == 1:
        return int_to_str(f.numerator)
    places = -x.exp
    if x.mant.denominator == 1 and places <= _MAX_DECIMAL_PLACES:  # terminating: print exactly
        digits = int_to_str(abs(x.mant.numerator)).rjust(places + 1, "0")
        return ("-" if x.sign < 0 else "") + digits[:-places] + "." + digits[-places:]
    return f"{int_to_str(f.numerator)}/{int_to_str(f.denominator)}"


def number_canonical(answer: str) -> str | None:
    """A normal form for a numeric answer ("1,000.0" -> "1000", ".5" -> "0.5"), or None."""
    x = parse_exact(answer)
    return None if x is None else _fmt_number(x)


def _close(a: ExactNumber, b: ExactNumber) -> bool:
    return a.is_close(b, REL_TOL)


def numeric_equal(a: str | None, b: str | None) -> bool:
    """True when both strings denote the same number (within :data:`REL_TOL`, exactly)."""
    if a is None or b is None:
        return False
    x, y = parse_exact(a), parse_exact(b)
    if x is None or y is None:
        return x is None and y is None and a.strip().lower() == b.strip().lower() and bool(a.strip())
    return _close(x, y)


# ---------------------------------------------------------------------------------------------
# LaTeX normalisation (cheap, string-level)

_UNIT_WORDS = (
    r"units?|degrees?|cm|m|km|mm|inches|inch|feet|foot|ft|meters?|miles?|hours?|minutes?|"
    r"seconds?|days?|weeks?|years?|dollars?|cents?|square|sq|cubic|mph|pounds?|lbs?|kg|g|ml|liters?"
)


def _strip_text_units(s: str) -> str:
    # "\text{ cm}^2", "\mbox{ inches}" after a number are units; a lone \text{Tuesday} is content.
    s = re.sub(rf"(?<=[\d}}])\s*\\(?:text|mbox|mathrm)\{{\s*(?:{_UNIT_WORDS})\s*\}}(?:\^\d)?", "", s)
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm|textnormal)\{([^{}]*)\}", r"\1", s)
    return s


def normalize_math(answer: str) -> str:
    """A cheap normal form of a LaTeX answer, used as the grouping key for math answers.

    Strips ``$``, ``\\left``/``\\right``, spacing commands, ``\\text{}`` units, degrees and a
    trailing period; ``\\dfrac``/``\\tfrac`` -> ``\\frac``; ``\\frac12`` -> ``\\frac{1}{2}``;
    plain numbers go through :func:`number_canonical` (so "1,000" -> "1000" but "1,2" stays).
    """
    s = answer.strip()
    s = s.replace("\\$", "").replace("$", "").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"(?<!\\)\\[,;:! ]|\\q?quad|~", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("{,}", ",")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\displaystyle", "")
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt\s*(\d+|[a-z])", r"\\sqrt{\1}", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = _strip_text_units(s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if re.fullmatch(r"[a-zA-Z]\s*=.*", s) and "," not in s:  # "x=5" -> "5"
        s = s.split("=", 1)[1]
    # Thousands separators only when the whole thing is one number ("1,000"); "1,2" is a list.
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) or re.fullmatch(r"-?(\d+\.?\d*|\.\d+)(e-?\d+)?%?", s):
        num = number_canonical(s.rstrip("%"))
        if num is not None:
            s = num
    return s


# ---------------------------------------------------------------------------------------------
# math-verify under a timeout

MATH_VERIFY_TIMEOUT_S = 5


@functools.lru_cache(maxsize=16384)
def _mv_parse(s: str, timeout_s: int | None) -> tuple[object, ...]:
    """math-verify's parse of one answer, cached: voting compares each answer with many others."""
    from math_verify import parse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(parse(_wrap(s), parsing_timeout=timeout_s))  # type: ignore[arg-type]


def _numeric_verdict(g: object, p: object) -> bool | None:
    """A fast verdict for two closed-form numbers (no symbols): True when equal to 1e-12, False
    when they differ by more than :data:`REL_TOL`; None (ask math-verify) otherwise."""
    import sympy

    if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr) and g.is_number and p.is_number):
        return None
    try:
        x, y = complex(g.evalf(30)), complex(p.evalf(30))
    except (TypeError, ValueError, ArithmeticError):
        return None
    if not all(math.isfinite(v) for v in (x.real, x.imag, y.real, y.imag)):
        return None
    diff, scale = abs(x - y), max(1.0, abs(x))
    if diff <= 1e-12 * scale:
        return True
    if diff > float(REL_TOL) * scale:
        return False
    return None


def _mv_compare(gold: str, pred: str, timeout_s: int | None) -> bool:
    from math_verify import verify

    g, p = _mv_parse(gold, timeout_s), _mv_parse(pred, timeout_s)
    if not g or not p:
        return False
    quick = _numeric_verdict(g[0], p[0])
    if quick is not None:
        return quick
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(verify(list(g), list(p), timeout_seconds=timeout_s))  # type: ignore[arg-type]


def _wrap(s: str) -> str:
    s = s.strip()
    return s if s.startswith("$") or "\\boxed" in s else f"${s}$"


def _with_thread_timeout(fn: Callable[[], bool], timeout_s: float) -> bool:
    """Run ``fn`` in a daemon thread; a call still running after ``timeout_s`` counts as False.

    A daemon thread cannot be killed, but it cannot keep the process alive at exit either.
    """
    box: list[bool] = []

    def target() -> None:
        try:
            box.append(fn())
        except Exception as e:  # noqa: BLE001 (math-verify/sympy failures mean "not shown equal")
            log.debug("math-verify failed: %s", e)

    t = threading.Thread(target=target, daemon=True, name="thinktwice-math-verify")
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        log.warning("math-verify timed out after %.0f s; treating answers as different", timeout_s)
        return False
    return bool(box and box[0])


@functools.lru_cache(maxsize=65536)
def _math_verify_equal(gold: str, pred: str) -> bool:
    if threading.current_thread() is threading.main_thread():
        # math-verify's own SIGALRM timeout works here and interrupts sympy.
        try:
            return _mv_compare(gold, pred, MATH_VERIFY_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 (any sympy failure means "not shown equal")
            log.debug("math-verify failed on %r vs %r: %s", gold, pred, e)
            return False
    # Off the main thread SIGALRM is unavailable: disable math-verify's timeout and bound the
    # wait ourselves.
    return _with_thread_timeout(lambda: _mv_compare(gold, pred, None), 2.0 * MATH_VERIFY_TIMEOUT_S)


def math_equal(a: str | None, b: str | None) -> bool:
    """True when two LaTeX answers are mathematically equal (``0.5`` vs ``\\frac{1}{2}``).

    Cheap normal forms first, then numbers, then math-verify (``a`` is treated as the gold).
    """
    if a is None or b is None:
        return False
    na, nb = normalize_math(a), normalize_math(b)
    if not na or not nb:
        return False
    if na == nb:
        return True
    x, y = _strict_number(na), _strict_number(nb)
    if x is not None and y is not None:
        return _close(x, y)
    if na.lower() == nb.lower() and re.fullmatch(r"[A-Za-z ()]+", na):
        return True  # text answers ("Tuesday", "(A)") compare case-insensitively
    if not (math_verify_safe(na) and math_verify_safe(nb)):
        return False  # towers, huge literals, deep nesting: decided by the normal forms alone
    return _math_verify_equal(na, nb)


def _strict_number(s: str) -> ExactNumber | None:
    """A number only when ``s`` is nothing but a number (no units, words, or lists)."""
    if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)(e-?\d+)?|-?\d+/\d+|-?\\frac\{-?\d+\}\{\d+\}", s):
        return parse_exact(s)
    return None


def exact_equal(a: str | None, b: str | None) -> bool:
    """Whitespace- and case-insensitive string equality."""
    if a is None or b is None:
        return False
    return " ".join(a.split()).lower() == " ".join(b.split()).lower()


def contains_equal(a: str | None, b: str | None) -> bool:
    """True when the gold ``b`` appears (case-insensitively) in the answer ``a``."""
    if a is None or b is None or not b.strip():
        return False
    return " ".join(b.split()).lower() in " ".join(a.split()).lower()


GRADERS: dict[str, Callable[[str | None, str | None], bool]] = {
    "numeric": numeric_equal,
    "math": math_equal,
    "exact": exact_equal,
    "contains": contains_equal,
}


def get_grader(name: str) -> Callable[[str | None, str | None], bool]:
    """The grader function named ``name`` (numeric, math, exact, contains)."""
    try:
        return GRADERS[name]
    except KeyError:
        raise ConfigError(f"unknown grader {name!r}; valid graders: {', '.join(GRADERS)}") from None
