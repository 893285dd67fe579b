"""Answer extractors shared by tasks: ``\\boxed{}`` with brace balancing, answer markers, numbers.

Each extractor takes model text and returns a string (or None when nothing is found); parsing a
string into a number is :func:`parse_number`. Graders live in :mod:`thinktwice.tasks.grading`.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "NUMBER_RE",
    "boxed",
    "boxed_all",
    "code_block",
    "first_number",
    "last_number",
    "marked_answer",
    "parse_number",
]

# A number as models write it: optional sign, thousands groups or plain digits, decimals,
# exponent; or a bare leading-dot decimal (".5"); or a simple fraction ("1/2").
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?"
NUMBER_RE = re.compile(rf"(?<![\w.])([-\u2212]?)\$?\s?({_NUM})(?:\s*/\s*(\d+)(?![\d.]))?")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_MARKER_RE = re.compile(
    r"####|\\boxed|\\fbox|\b(?:final\s+)?answer\s+is\b\s*:?|\banswer\s*:",
    re.IGNORECASE,
)


def boxed_all(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order, braces balanced.

    ``\\boxed 5`` (no braces) yields the next token. An unclosed box is ignored.

    >>> boxed_all(r"so \\boxed{\\frac{1}{2}} or \\boxed{3}")
    ['\\\\frac{1}{2}', '3']
    """
    out: list[str] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                c = text[j]
                if c == "\\" and j + 1 < len(text):  # skip escaped characters such as \{ and \}
                    j += 2
                    continue
                if c == "{":
                    depth += 1
                elif c == "}":
                    depth -= 1
                    if depth == 0:
                        out.append(text[i + 1 : j].strip())
                        break
                j += 1
        elif m.group(0).endswith(" ") or m.group(0).endswith("\t"):
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append(tok.group(0))
    return out


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` / ``\\fbox{}`` (last wins), or None."""
    found = boxed_all(text)
    return found[-1] if found else None


def _clean_number_text(s: str) -> str:
    return s.replace(",", "").replace("\u2212", "-")


def _numbers(text: str) -> list[re.Match[str]]:
    return list(NUMBER_RE.finditer(text))


def _number_text(m: re.Match[str]) -> str:
    sign, num, den = m.group(1), m.group(2), m.group(3)
    s = ("-" if sign else "") + _clean_number_text(num)
    return f"{s}/{den}" if den else s


def first_number(text: str) -> str | None:
    """The first number in ``text`` as a plain string ("$1,000" -> "1000", "1/2" -> "1/2")."""
    text = _latex_to_plain(text)
    ms = _numbers(text)
    return _number_text(ms[0]) if ms else None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (commas as thousands separators removed), or None."""
    text = _latex_to_plain(text)
    ms = _numbers(text)
    return _number_text(ms[-1]) if ms else None


def marked_answer(text: str) -> str | None:
    """The text after the last explicit answer marker, or None when there is no marker.

    Markers (case-insensitive): ``#### X``, ``\\boxed{X}``, ``The answer is X``,
    ``Final answer is X``, ``Answer: X``. For ``\\boxed`` the balanced box content is returned;
    for the others the rest of that line.
    """
    last: re.Match[str] | None = None
    for m in _MARKER_RE.finditer(text):
        last = m
    if last is None:
        return None
    token = last.group(0)
    if token.startswith("\\"):
        b = boxed(text[last.start() :])
        return b
    rest = text[last.end() :].lstrip()
    line = rest.split("\n", 1)[0].strip()
    return line or None


def _latex_to_plain(s: str) -> str:
    """Just enough LaTeX undoing to read numbers: fractions, \\text, \\$, thin spaces."""
    s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"\1/\2", s)
    s = re.sub(r"\\[dt]?frac\s*(\d)\s*(\d)", r"\1/\2", s)
    s = re.sub(r"\\text\{([^{}]*)\}", r" \1 ", s)
    s = s.replace("\\$", "$").replace("\\%", "%").replace("\\!", "").replace("\\,", "")
    s = s.replace("{,}", ",")
    return s


def parse_number(s: str | None) -> Fraction | None:
    """The number a short answer string denotes, exactly, or None when it is not one number.

    Accepts "1,000", "$18.00", "18 dollars", "5 cm", "50%" (read as 50: GSM8K golds state
    percentages without the sign), ".5", "1/2", "\\frac{1}{2}", "-3", "1e3", "3.0".

    >>> parse_number("$1,000.50"), parse_number("\\\\frac{1}{2}"), parse_number("abc")
    (Fraction(2001, 2), Fraction(1, 2), None)
    """
    if s is None:
        return None
    t = _latex_to_plain(s).strip().rstrip(".").strip()
    if not t:
        return None
    m = NUMBER_RE.search(t)
    if m is None:
        return None
    # Only what is around the number may be a unit or word, not another number or operator.
    before = t[: m.start()].strip()
    after = t[m.end() :].strip()
    if before not in ("", "$", "=") and not re.fullmatch(r"[A-Za-z ]*[=:]?\s*\$?", before):
        return None
    if NUMBER_RE.search(after) or re.match(r"[-+*/^(\\]", after):
        return None
    try:
        return Fraction(_number_text(m))
    except (ValueError, ZeroDivisionError):
        return None


def code_block(text: str, language: str = "python", prefer: str | None = None) -> str:
    """The code of the last fenced block tagged ``language`` (else the last fenced block, else
    ``text`` itself). With ``prefer``, the last such block containing that string wins."""
    blocks = re.findall(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", text, re.DOTALL)
    if not blocks:
        return text
    tagged = [code for lang, code in blocks if lang.lower() in (language, language[:2])]
    pool = tagged or [code for _, code in blocks]
    if prefer is not None:
        pool = [c for c in pool if prefer in c] or pool
    return pool[-1].rstrip() + "\n"
