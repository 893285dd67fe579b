"""A small word-and-digit tokenizer for the organism.

Every word the arithmetic generator writes is one token (with its leading space), every digit is
its own token (so numbers of any size are spelled digit by digit), and every printable ASCII
character is a fallback token, so any ASCII text round-trips exactly. Token 0 is ``<eos>``, which
separates documents in training and ends a generation.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from thinktwice.errors import ConfigError

__all__ = ["EOS", "Tokenizer"]

EOS = "<eos>"
_PIECE = re.compile(r" ?[A-Za-z]+|.|\n", re.DOTALL)


class Tokenizer:
    """Maps text to token ids and back; built from a word list, so the vocabulary is fixed."""

    def __init__(self, words: Sequence[str]) -> None:
        chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
        vocab = [EOS, *chars]
        for w in words:
            for form in (w, " " + w):
                if len(form) > 1 and form not in vocab:
                    vocab.append(form)
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {t: i for i, t in enumerate(vocab)}
        self.eos_id = 0
        self.newline_id = self.index["\n"]

    @property
    def size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; words outside the vocabulary are spelled character by character."""
        out: list[int] = []
        for piece in _PIECE.findall(text):
            tid = self.index.get(piece)
            if tid is not None:
                out.append(tid)
                continue
            for ch in piece:
                cid = self.index.get(ch)
                if cid is None:
                    raise ConfigError(f"the organism tokenizer cannot encode {ch!r} (ASCII only)")
                out.append(cid)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids if i != self.eos_id)

    def token(self, tid: int) -> str:
        return self.vocab[tid]

    def to_dict(self) -> dict[str, list[str]]:
        return {"vocab": self.vocab}

    @classmethod
    def from_vocab(cls, vocab: Sequence[str]) -> Tokenizer:
        tok = cls.__new__(cls)
        tok.vocab = list(vocab)
        tok.index = {t: i for i, t in enumerate(tok.vocab)}
        tok.eos_id = 0
        tok.newline_id = tok.index["\n"]
        return tok
