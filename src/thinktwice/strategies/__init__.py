"""Self-update strategies: each spends a Budget through a Backend and returns a Decision."""

from __future__ import annotations

from thinktwice.registry import strategies
from thinktwice.strategies.base import BaseStrategy, RunContext, Strategy, Verdict
from thinktwice.strategies.voting import Vote, group_answers, vote

__all__ = ["Strategy", "BaseStrategy", "RunContext", "Verdict", "Vote", "vote", "group_answers"]

strategies.add("greedy", "thinktwice.strategies.greedy:Greedy", "one sample at temperature 0")
strategies.add("self-consistency", "thinktwice.strategies.self_consistency:SelfConsistency",
               "majority vote over N samples")
