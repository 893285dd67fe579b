"""Exact numbers of any exponent (tasks.exactnum) and the math-verify pre-screen (tasks.mathscreen)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.tasks.exactnum import MAX_DIGITS, ExactNumber, int_to_str, parse_decimal
from thinktwice.tasks.extract import parse_exact, parse_number
from thinktwice.tasks.grading import REL_TOL, number_canonical, numeric_equal
from thinktwice.tasks.mathscreen import MAX_LOG10, log10_bound, math_verify_safe

FAST = settings(deadline=None, max_examples=200)
fractions = st.builds(Fraction, st.integers(-(10**30), 10**30), st.integers(1, 10**12))
# decimal shifts, a third of them past PLAIN_LOG10 (numbers never built as Fractions)
shifts = st.one_of(st.integers(-6000, 6000), st.integers(4040, 6000), st.integers(-6000, -4040))


def _spec_close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= REL_TOL * max(1, abs(b))


@FAST
@given(a=fractions, b=fractions, shift=shifts)
def test_exact_number_agrees_with_fraction_arithmetic(a: Fraction, b: Fraction, shift: int) -> None:
    """Equality, order and closeness match the Fraction formulas, also far outside float range
    (``shift`` moves both numbers by up to 10**6000, through the non-plain code paths)."""
    scale = Fraction(10) ** shift
    fa, fb = a * scale, b * scale
    x, y = ExactNumber.of(a, shift), ExactNumber.of(b, shift)
    assert (x == y) is (fa == fb)
    assert x.compare(y) == (fa > fb) - (fa < fb)
    assert x.is_close(y, REL_TOL) is _spec_close(fa, fb)
    if x.is_plain:
        assert x.to_fraction() == fa


@FAST
@given(a=fractions, near=st.integers(-3, 3), shift=shifts)
def test_closeness_at_the_tolerance_boundary(a: Fraction, near: int, shift: int) -> None:
    b = a + a * REL_TOL * (1 + Fraction(near, 10**9))  # just inside, on, or just outside 1e-6
    scale = Fraction(10) ** shift
    x, y = ExactNumber.of(b, shift), ExactNumber.of(a, shift)
    assert x.is_close(y, REL_TOL) is _spec_close(b * scale, a * scale)


@FAST
@given(m=st.integers(1, 10**40), k=st.integers(-(10**12), 10**12), z=st.integers(0, 30))
def test_spellings_of_one_number_have_one_normal_form(m: int, k: int, z: int) -> None:
    s = str(m)
    x = parse_decimal(f"{s}e{k}")
    y = parse_decimal(f"{s}{'0' * z}e{k - z}")  # trailing zeros moved into the exponent
    w = parse_decimal(f"{s[:1]}.{s[1:]}e{k + len(s) - 1}")  # scientific notation
    assert x is not None and x == y == w
    assert hash(x) == hash(y)


def test_parse_decimal_limits_are_deliberate() -> None:
    assert parse_decimal("1" * MAX_DIGITS) is not None
    assert parse_decimal("1" * (MAX_DIGITS + 1)) is None  # int() could not read it (4300-digit limit)
    assert parse_decimal("1" + "0" * 100_000) == parse_decimal("1e100000")  # zeros are not digits
    assert parse_decimal("1e" + "9" * 15) is not None
    assert parse_decimal("1e" + "9" * 16) is None
    assert parse_decimal("1", "0") is None and parse_decimal("1", "000") is None
    assert parse_decimal("1" + "0" * 5000, "3") is None  # a fraction too large to build
    assert parse_decimal("\u0661\u0662") == parse_decimal("12")
    assert parse_decimal("0.000") == parse_decimal("0") == ExactNumber(Fraction(0), 0)


def test_no_huge_integer_is_built() -> None:
    x = parse_exact("1e10000000")
    assert x is not None and x.mant == 1 and x.exp == 10**7 and not x.is_plain
    with pytest.raises(OverflowError):
        x.to_fraction()
    assert parse_number("1e10000000") is None  # a Fraction would need 10**7 digits
    assert parse_number("1e999") == 10**999


@FAST
@given(n=st.integers(0, 10**200), k=st.integers(0, 30_000))
def test_int_to_str_past_the_digit_limit(n: int, k: int) -> None:
    big = n * 10**k + 7
    s = int_to_str(big)
    # read it back in chunks that int() accepts
    back = 0
    for i in range(0, len(s), 4000):
        chunk = s[i : i + 4000]
        back = back * 10 ** len(chunk) + int(chunk)
    assert back == big
    assert s[0] != "0"
    assert int_to_str(-big) == "-" + s


@FAST
@given(
    whole=st.integers(0, 10**12),
    frac=st.text("0123456789", max_size=8),
    exp=st.integers(-12, 12),
    neg=st.booleans(),
)
def test_ordinary_numbers_read_as_before(whole: int, frac: str, exp: int, neg: bool) -> None:
    """Real answers: the value is Fraction's reading of the same text, as the old grader had it."""
    text = ("-" if neg else "") + str(whole) + (f".{frac}" if frac else "") + (f"e{exp}" if exp else "")
    assert parse_number(text) == Fraction(text)
    key = number_canonical(text)
    assert key is not None and parse_number(key) == Fraction(text)  # keys read back exactly


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("1,000", "1000.0", True), (".5", "1/2", True), ("0.333333", "1/3", True), ("0.33", "1/3", False),
     ("18.0000001", "18", True), ("1.5/2", "0.75", False), ("$18.00", "18", True), ("1e3", "1000", True)],
)
def test_real_numeric_answers_compare_as_before(a: str, b: str, same: bool) -> None:
    assert numeric_equal(a, b) is same  # "1.5/2" is not read as a fraction, as before


@pytest.mark.parametrize(
    ("a", "key"),
    [("1,000.0", "1000"), (".5", "0.5"), ("-0.25", "-0.25"), ("1/3", "1/3"), ("1e-15", "0.000000000000001"),
     ("1e-16", "1/10000000000000000"), ("3.0", "3"), ("1e10000000", "1e10000000"), ("-5e-10000001", "-5e-10000001")],
)
def test_canonical_keys(a: str, key: str) -> None:
    assert number_canonical(a) == key


# ---- the math-verify pre-screen --------------------------------------------------------------

REJECTED = [r"10^{10^{10^{10}}}", r"9^{9^{9^{9}}}", r"2^{2^{2^{2^{2^{2}}}}}", r"10^{10^{10}}", "10!!!!!",
            r"(10^{100})!", r"99999999999^{99999999999}", r"2^{1000000}", r"10^{-10^{10}}", r"2^3^4^5",
            r"\binom{10^{6}}{5 \cdot 10^{5}}", r"{1000000 \choose 500000}", r"\exp(10^{10})",
            r"\sum_{k=1}^{10^{9}} k", "(" * 500 + "1" + ")" * 500, "\\binom" * 5000, "1\x002", "x" * 600]
ACCEPTED = [r"\frac{\sqrt{3}}{2}", r"2^{1000}", r"e^{-x^2}", "(0,1]", r"\left[ \frac{\pi^2}{8}, 5 \right]",
            r"10,\!080", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"2^{27} - 2^{11}", "5!", r"\binom{10}{3}",
            r"x^5 - x^4 + x^3", r"\text{Tuesday}", r"\{1,2\}", r"(-\infty, 3)", r"\sqrt[3]{2}", "1e10000000"]


@pytest.mark.parametrize("latex", REJECTED)
def test_screen_rejects_what_could_run_unbounded(latex: str) -> None:
    assert not math_verify_safe(latex)


@pytest.mark.parametrize("latex", ACCEPTED)
def test_screen_accepts_ordinary_answers(latex: str) -> None:
    assert math_verify_safe(latex)


@st.composite
def _integer_expr(draw: st.DrawFn, depth: int = 3) -> tuple[str, int]:
    """A LaTeX integer expression and its exact value, small enough to evaluate here."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        v = draw(st.integers(0, 99))
        return str(v), v
    op = draw(st.sampled_from(["+", "-", "*", "^", "!"]))
    a, va = draw(_integer_expr(depth - 1))
    if op == "!":
        n = abs(va) % 25
        return f"({a} - {va - n})!", math.factorial(n)
    b, vb = draw(_integer_expr(depth - 1))
    if op == "^":
        e = abs(vb) % 7
        if abs(va) > 10**50:
            va, a = 3, "3"
        return f"({a})^{{{b} - {vb - e}}}", va**e
    if op == "*":
        return f"({a}) \\cdot ({b})", va * vb
    return (f"({a}) + ({b})", va + vb) if op == "+" else (f"({a}) - ({b})", va - vb)


@settings(deadline=None, max_examples=300)
@given(expr=_integer_expr())
def test_log10_bound_is_an_upper_bound(expr: tuple[str, int]) -> None:
    latex, value = expr
    bound = log10_bound(latex)
    if bound is None:  # rejected: the bound would pass MAX_LOG10
        return
    assert bound <= MAX_LOG10
    assert value == 0 or math.log10(abs(value)) <= bound + 1e-9, (latex, value, bound)
