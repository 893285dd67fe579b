"""Exact numbers of bounded size with unbounded decimal exponents, for grading model answers.

A model may answer ``1e10000000`` or a 400-digit integer. ``Fraction("1e10000000")`` builds a
10-million-digit integer and ``float()`` of a 309-digit one overflows, so answers are held as
``mant * 10**exp`` (a small exact Fraction times a power of ten) and compared exactly without
ever building a number whose size depends on the exponent.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["MAX_DIGITS", "MAX_EXPONENT_DIGITS", "PLAIN_LOG10", "ExactNumber", "int_to_str", "parse_decimal"]

# Significant digits a literal may have. Kept under Python's int<->str limit (4300 digits,
# sys.get_int_max_str_digits) so every literal converts with int() and prints with str().
MAX_DIGITS = 4000
# Digits of a literal's exponent: |exp| < 10**15 stays exact in a float magnitude estimate.
MAX_EXPONENT_DIGITS = 15
# Numbers with |log10| above this are never turned into a Fraction (nor printed in full).
PLAIN_LOG10 = 4000

_LOG10_2 = math.log10(2)
_DEC_RE = re.compile(r"(\d*)(?:\.(\d*))?(?:[eE]([-+]?)(\d+))?")


def _valuation(n: int, p: int) -> int:
    """The exponent of the prime ``p`` in ``n != 0``, by repeated squaring (few big divisions)."""
    if p == 2:
        return (n & -n).bit_length() - 1
    count, powers = 0, [p]
    while n % powers[-1] == 0:
        n //= powers[-1]
        count += 1 << (len(powers) - 1)
        powers.append(powers[-1] * powers[-1])
    for k in range(len(powers) - 2, -1, -1):
        if n % powers[k] == 0:
            n //= powers[k]
            count += 1 << k
    return count


def int_to_str(n: int) -> str:
    """``str(n)`` for any size: splits numbers past the int->str limit into chunks."""
    if n < 0:
        return "-" + int_to_str(-n)
    if n.bit_length() < 13000:  # about 3900 digits: under the 4300-digit limit
        return str(n)
    half = round(n.bit_length() * _LOG10_2 / 2)
    hi, lo = divmod(n, 10**half)
    return int_to_str(hi) + int_to_str(lo).rjust(half, "0")


@dataclass(frozen=True, slots=True)
class ExactNumber:
    """The rational ``mant * 10**exp``, in a unique normal form (so ``==`` is exact equality).

    Normal form: the denominator of ``mant`` is coprime to 10 and its numerator is not a
    multiple of 10 (so ``1/2`` is ``5 * 10**-1``). Zero is ``(0, 0)``.

    >>> ExactNumber.of(Fraction(1200)) == ExactNumber.of(Fraction(12), 2)
    True
    """

    mant: Fraction
    exp: int

    @classmethod
    def of(cls, value: Fraction, exp: int = 0) -> ExactNumber:
        """``value * 10**exp`` in normal form (``value`` must be small: it is reduced exactly)."""
        if value == 0:
            return cls(Fraction(0), 0)
        num, den = value.numerator, value.denominator
        t = min(_valuation(num, 2) - _valuation(den, 2), _valuation(num, 5) - _valuation(den, 5))
        if t >= 0:  # num is a multiple of 10**t (value is reduced, so den has no 2 or 5 then)
            return cls(Fraction(num // 10**t, den), exp + t)
        return cls(Fraction(num * 10**-t, den), exp + t)  # den's 2s and 5s cancel

    @property
    def sign(self) -> int:
        return (self.mant > 0) - (self.mant < 0)

    @property
    def log10_estimate(self) -> float:
        """``log10(|self|)`` within 0.31 (from bit lengths); ``-inf`` for zero."""
        if self.mant == 0:
            return -math.inf
        bits = self.mant.numerator.bit_length() - self.mant.denominator.bit_length()
        return bits * _LOG10_2 + self.exp

    @property
    def is_plain(self) -> bool:
        """True when the number is small enough to build as a Fraction (zero included)."""
        return self.mant == 0 or abs(self.log10_estimate) <= PLAIN_LOG10

    def to_fraction(self) -> Fraction:
        """The exact value. Only for :attr:`is_plain` numbers: the size grows with ``exp``."""
        if not self.is_plain:
            raise OverflowError(f"{self!r} is too large or too small to build as a Fraction")
        return self.mant * 10**self.exp if self.exp >= 0 else self.mant / 10**-self.exp

    def scaled(self, factor: Fraction) -> ExactNumber:
        """``self * factor`` for a small ``factor``."""
        return ExactNumber.of(self.mant * factor, self.exp)

    def compare(self, other: ExactNumber) -> int:
        """-1, 0 or 1 as ``self`` is below, equal to or above ``other``; exact, bounded work."""
        if self.sign != other.sign:
            return 1 if self.sign > other.sign else -1
        if self.sign == 0:
            return 0
        return self.sign * _compare_abs(self, other)

    def is_close(self, ref: ExactNumber, rel_tol: Fraction) -> bool:
        """``|self - ref| <= rel_tol * max(1, |ref|)``, decided exactly.

        Rewritten as ``self`` lying in ``[ref - T, ref + T]``; when ``ref`` is too small to build
        the interval roles swap (the condition is symmetric once ``T = rel_tol``).
        """
        if self == ref:
            return True
        if _compare_abs(ref, _ONE) >= 0:  # T = rel_tol * |ref|: the interval scales with ref
            lo, hi = ref.scaled(1 - rel_tol), ref.scaled(1 + rel_tol)
            if ref.sign < 0:
                lo, hi = hi, lo
            return lo.compare(self) <= 0 <= hi.compare(self)
        for centre, point in ((ref, self), (self, ref)):  # |ref| < 1: T = rel_tol
            if centre.is_plain:
                c = centre.to_fraction()
                lo, hi = ExactNumber.of(c - rel_tol), ExactNumber.of(c + rel_tol)
                return lo.compare(point) <= 0 <= hi.compare(point)
        # Neither can be built: ref is tiny (|ref| < 1); self is tiny too (both within 1e-3999
        # of zero, so within rel_tol of each other) or huge (far apart).
        return _compare_abs(self, _ONE) < 0

    def key(self) -> str:
        """A unique text key for numbers too large or small to print in full (``"1e10000000"``)."""
        num, den = self.mant.numerator, self.mant.denominator
        body = int_to_str(num) if den == 1 else f"{int_to_str(num)}/{int_to_str(den)}"
        return f"{body}e{self.exp}"


_ONE = ExactNumber(Fraction(1), 0)


def _compare_abs(x: ExactNumber, y: ExactNumber) -> int:
    if x.mant == 0 or y.mant == 0:
        return (x.mant != 0) - (y.mant != 0)
    mx, my = x.log10_estimate, y.log10_estimate
    if mx > my + 2:
        return 1
    if my > mx + 2:
        return -1
    # Magnitudes within 10**3 of each other: the exponents differ by at most the mantissas'
    # digit counts, so shifting both to the smaller exponent builds only small numbers.
    k = min(x.exp, y.exp)
    a, b = abs(x.mant) * 10 ** (x.exp - k), abs(y.mant) * 10 ** (y.exp - k)
    return (a > b) - (a < b)


def _ascii_digits(s: str) -> str:
    if s.isascii():
        return s
    return "".join(str(d) if (d := unicodedata.decimal(c, None)) is not None else c for c in s)


def _literal(text: str) -> tuple[int, int] | None:
    """A decimal literal ("1200", "1.5e-3", ".5") as ``(digits, exp)``, or None when it is not one
    or is beyond :data:`MAX_DIGITS` / :data:`MAX_EXPONENT_DIGITS`."""
    m = _DEC_RE.fullmatch(text)
    if m is None:
        return None
    ip, fp, esign, ex = m.group(1), m.group(2) or "", m.group(3), m.group(4)
    if not (ip or fp):
        return None
    exp = 0
    if ex is not None:
        ex = ex.lstrip("0") or "0"
        if len(ex) > MAX_EXPONENT_DIGITS:
            return None
        exp = -int(ex) if esign == "-" else int(ex)
    digits = (ip + fp).lstrip("0")
    exp -= len(fp)
    stripped = digits.rstrip("0")
    exp += len(digits) - len(stripped)
    if len(stripped) > MAX_DIGITS:
        return None
    return (int(stripped) if stripped else 0), exp


def parse_decimal(num: str, den: str | None = None, negative: bool = False) -> ExactNumber | None:
    """The number ``[-]num[/den]`` for decimal literals (digits in any script), or None.

    None also when a literal has more than :data:`MAX_DIGITS` significant digits, an exponent
    of more than :data:`MAX_EXPONENT_DIGITS` digits, the denominator is zero, or a fraction is
    too large or small to build (so every number that is not plain is an integer times a power
    of ten, and its :meth:`ExactNumber.key` reads back as the same number).

    >>> parse_decimal("1e10000000").key(), parse_decimal("1.50", "3").to_fraction()
    ('1e10000000', Fraction(1, 2))
    """
    a = _literal(_ascii_digits(num))
    if a is None:
        return None
    b = (1, 0) if den is None else _literal(_ascii_digits(den))
    if b is None or b[0] == 0:
        return None
    sign = -1 if negative else 1
    x = ExactNumber.of(Fraction(sign * a[0], b[0]), a[1] - b[1])
    return x if den is None or x.is_plain else None
