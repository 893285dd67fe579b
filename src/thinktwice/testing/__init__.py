"""Test helpers that ship with the package: a fake OpenAI-compatible server (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from thinktwice.testing.fake_openai import FAULT_KINDS, FakeOpenAIServer, FakeStats, fake_tokenize

__all__ = ["FAULT_KINDS", "FakeOpenAIServer", "FakeStats", "fake_tokenize"]
