"""The organism tokenizer: exact round trips, one token per known word and per digit."""

from __future__ import annotations

import string
from itertools import islice

import pytest

pytest.importorskip("torch")

from thinktwice.errors import ConfigError
from thinktwice.organism import arith
from thinktwice.organism.train import make_tokenizer


def test_round_trip_of_problems_and_arbitrary_ascii() -> None:
    tok = make_tokenizer()
    for p in islice(arith.generate(0), 50):
        text = p.question + "\n" + p.solution("grouped")
        assert tok.decode(tok.encode(text)) == text
    weird = string.printable.replace("\t", "").replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    assert tok.decode(tok.encode(weird + " Zebra12 x")) == weird + " Zebra12 x"


def test_words_are_single_tokens_and_numbers_are_spelled_by_digit() -> None:
    tok = make_tokenizer()
    assert len(tok.encode(" apples")) == 1
    assert [tok.token(i) for i in tok.encode("123")] == ["1", "2", "3"]
    assert tok.decode([tok.eos_id]) == ""
    with pytest.raises(ConfigError):
        tok.encode("café")
