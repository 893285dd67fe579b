"""Answer extractors shared by tasks: ``\\boxed{}`` with brace balancing, answer markers, numbers.

Each extractor takes model text and returns a string (or None when nothing is found), in time
linear in the text; :func:`parse_exact` / :func:`parse_number` read a string as a number.
Graders live in :mod:`thinktwice.tasks.grading`.
"""

from __future__ import annotations

import re
from fractions import Fraction

from thinktwice.tasks.exactnum import ExactNumber, parse_decimal

__all__ = [
    "NUMBER_RE",
    "boxed",
    "boxed_all",
    "code_block",
    "first_number",
    "last_number",
    "marked_answer",
    "parse_exact",
    "parse_number",
]

# A number as models write it: optional sign, thousands groups or plain digits, decimals,
# exponent; or a bare leading-dot decimal (".5"); or a simple fraction ("1/2").
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?"
NUMBER_RE = re.compile(rf"(?<![\w.])([-\u2212]?)\$?\s?({_NUM})(?:\s*/\s*(\d+)(?![\d.]))?")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_BARE_TOKEN_RE = re.compile(r"[^\s$]+")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escape pair is consumed whole
_MAX_BOXED_OUTPUT = 4  # boxed_all returns at most about this many times the text's length
_MARKER_RE = re.compile(
    r"####|\\boxed|\\fbox|\b(?:final\s+)?answer\s+is\b\s*:?|\banswer\s*:",
    re.IGNORECASE,
)


def _box_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each box's content, in text order, in one linear pass.

    Braces are matched with one stack over the whole text (escaped characters such as ``\\{``
    skipped), which pairs each box's ``{`` exactly as a scan from that ``{`` would, without
    rescanning the text once per box (quadratic on ``\\boxed{\\boxed{...``).
    """
    spans: dict[int, tuple[int, int]] = {}  # box start -> content span
    braces: dict[int, int] = {}  # position of a box's '{' -> box start
    for m in _BOX_RE.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            braces[i] = m.start()
        elif m.group(0).endswith((" ", "\t")):
            tok = _BARE_TOKEN_RE.match(text, i)
            if tok:
                spans[m.start()] = tok.span()
    if braces:
        stack: list[int] = []
        for b in _BRACE_RE.finditer(text, min(braces)):
            c = b.group(0)
            if c == "{":
                stack.append(b.start())
            elif c == "}" and stack:
                j = stack.pop()
                if j in braces:
                    spans[braces[j]] = (j + 1, b.start())
    return [spans[k] for k in sorted(spans)]


def boxed_all(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order, braces balanced.

    ``\\boxed 5`` (no braces) yields the next token. An unclosed box is ignored. Boxes inside
    boxes are listed too, unless their contents would add up to more than a few times the text
    (``\\boxed{\\boxed{...`` thousands deep): then only the outermost boxes are.

    >>> boxed_all(r"so \\boxed{\\frac{1}{2}} or \\boxed{3}")
    ['\\\\frac{1}{2}', '3']
    """
    spans = _box_spans(text)
    if sum(j - i for i, j in spans) > _MAX_BOXED_OUTPUT * max(len(text), 1):
        outer: list[tuple[int, int]] = []
        for i, j in spans:
            if not outer or i > outer[-1][1]:
                outer.append((i, j))
        spans = outer
    return [text[i:j].strip() for i, j in spans]


def boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` / ``\\fbox{}`` (last wins), or None."""
    spans = _box_spans(text)
    if not spans:
        return None
    i, j = spans[-1]
    return text[i:j].strip()


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


def parse_exact(s: str | None) -> ExactNumber | None:
    """The number a short answer string denotes, exactly and of any size, or None.

    Same rules as :func:`parse_number`; ``"1e10000000"`` is a number here but never a
    10-million-digit integer (see :class:`~thinktwice.tasks.exactnum.ExactNumber`).
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
    return _match_value(m)


def _match_value(m: re.Match[str]) -> ExactNumber | None:
    sign, num, den = m.group(1), _clean_number_text(m.group(2)), m.group(3)
    if den is not None and not num.isdecimal():
        return None  # "1.5/2" and "1e3/2" are not read as fractions
    return parse_decimal(num, den, negative=bool(sign))


def parse_number(s: str | None) -> Fraction | None:
    """The number a short answer string denotes, exactly, or None when it is not one number.

    Accepts "1,000", "$18.00", "18 dollars", "5 cm", "50%" (read as 50: GSM8K golds state
    percentages without the sign), ".5", "1/2", "\\frac{1}{2}", "-3", "1e3", "3.0". Numbers
    too large or small to build as a Fraction (``1e10000000``) are None here; graders use
    :func:`parse_exact`.

    >>> parse_number("$1,000.50"), parse_number("\\\\frac{1}{2}"), parse_number("abc")
    (Fraction(2001, 2), Fraction(1, 2), None)
    """
    x = parse_exact(s)
    return x.to_fraction() if x is not None and x.is_plain else None


_FENCE_LANG_RE = re.compile(r"[ \t]*([\w+-]*)")


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block: an opening fence needs a newline after its
    info string; a block without a closing fence runs to the end. Linear in ``text``."""
    out: list[tuple[str, str]] = []
    pos = 0
    while (i := text.find("```", pos)) != -1:
        nl = text.find("\n", i + 3)
        if nl == -1:
            break
        lang = _FENCE_LANG_RE.match(text, i + 3, nl)
        end = text.find("```", nl + 1)
        out.append((lang.group(1) if lang else "", text[nl + 1 : end if end != -1 else len(text)]))
        if end == -1:
            break
        pos = end + 3
    return out


def code_block(text: str, language: str = "python", prefer: str | None = None) -> str:
    """The code of the last fenced block tagged ``language`` (else the last fenced block, else
    ``text`` itself). With ``prefer``, the last such block containing that string wins."""
    blocks = _fenced_blocks(text)
    if not blocks:
        return text
    tagged = [code for lang, code in blocks if lang.lower() in (language, language[:2])]
    pool = tagged or [code for _, code in blocks]
    if prefer is not None:
        pool = [c for c in pool if prefer in c] or pool
    return pool[-1].rstrip() + "\n"
