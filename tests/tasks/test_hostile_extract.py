r"""The linear-time extractors give exactly what the simple (quadratic) definitions give.

``boxed_all`` used to rescan the text from every ``\boxed{``, and ``code_block`` used a regex
that backtracks over a run of backticks: both took minutes on 200k-character outputs. The
references below are those definitions, kept here as the specification.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from thinktwice.tasks.extract import boxed, boxed_all, code_block

FAST = settings(deadline=None, max_examples=400)


def _boxed_all_reference(text: str) -> list[str]:
    out: list[str] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                c = text[j]
                if c == "\\" and j + 1 < len(text):
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
        elif m.group(0).endswith((" ", "\t")):
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append(tok.group(0))
    return out


def _code_block_reference(text: str, language: str = "python", prefer: str | None = None) -> str:
    blocks = re.findall(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", text, re.DOTALL)
    if not blocks:
        return text
    tagged = [code for lang, code in blocks if lang.lower() in (language, language[:2])]
    pool = tagged or [code for _, code in blocks]
    if prefer is not None:
        pool = [c for c in pool if prefer in c] or pool
    return pool[-1].rstrip() + "\n"


BOX_TEXT = st.lists(st.sampled_from(["\\boxed", "\\fbox", "{", "}", "\\", "\\{", "\\}", " ", "\t", "\n", "$",
                                     "1", "x", "\\frac", "\\\\"]), max_size=40).map("".join)
CODE_TEXT = st.lists(st.sampled_from(["```", "`", "python", "py", "js", " ", "\t", "\n", "def ", "x", "+", "-"]),
                     max_size=40).map("".join)


@FAST
@given(text=BOX_TEXT)
def test_boxed_all_matches_the_rescanning_definition(text: str) -> None:
    ref = _boxed_all_reference(text)
    assert boxed_all(text) == ref
    assert boxed(text) == (ref[-1] if ref else None)


@FAST
@given(text=CODE_TEXT, prefer=st.sampled_from([None, "def ", "x"]))
def test_code_block_matches_the_regex_definition(text: str, prefer: str | None) -> None:
    assert code_block(text, "python", prefer=prefer) == _code_block_reference(text, "python", prefer)


def test_deeply_nested_boxes_list_only_the_outermost() -> None:
    text = "\\boxed{" * 20_000 + "7" + "}" * 20_000 + " and \\boxed{8}"
    assert boxed(text) == "8"
    out = boxed_all(text)
    assert len(out) == 2 and out[1] == "8"  # all 20,000 nested contents: over a gigabyte
    assert boxed("\\boxed{" * 20_000 + "7" + "}" * 20_000) == "7"  # the last box is the innermost
    assert boxed_all("\\boxed{\\boxed{3}}") == ["\\boxed{3}", "3"]  # shallow nesting: all boxes
