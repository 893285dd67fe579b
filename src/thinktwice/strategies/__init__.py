"""Self-update strategies: each spends a Budget through a Backend and returns a Decision."""

from __future__ import annotations

from thinktwice.registry import strategies
from thinktwice.strategies.base import BaseStrategy, RunContext, Strategy, Verdict
from thinktwice.strategies.voting import Vote, group_answers, vote

__all__ = ["Strategy", "BaseStrategy", "RunContext", "Verdict", "Vote", "vote", "group_answers"]

strategies.add("greedy", "thinktwice.strategies.greedy:Greedy", "one sample at temperature 0")
strategies.add("self-consistency", "thinktwice.strategies.self_consistency:SelfConsistency",
               "majority vote over N samples")
strategies.add("weighted-vote", "thinktwice.strategies.weighted:WeightedVote",
               "vote weighted by a signal (weighted-vote:SIGNAL)")
strategies.add("best-of-n", "thinktwice.strategies.weighted:BestOfN", "highest-scoring sample (best-of-n:SIGNAL)")
strategies.add("borda", "thinktwice.strategies.weighted:Borda", "Borda vote by self-certainty rank, p=0.5")
strategies.add("adaptive-consistency", "thinktwice.strategies.adaptive:AdaptiveConsistency",
               "sample until the Beta stopping rule reaches 0.95 (max 40)")
strategies.add("esc", "thinktwice.strategies.adaptive:EarlyStoppingSC",
               "early-stopping self-consistency: windows of 5 until one agrees (max 40)")
strategies.add("deepconf-online", "thinktwice.strategies.deepconf:DeepConfOnline",
               "warm-up sets a confidence threshold; later traces are cut mid-generation below it")
strategies.add("deepconf-offline", "thinktwice.strategies.deepconf:DeepConfOffline",
               "confidence-weighted vote over the top-eta traces")
strategies.add("confidence-gate", "thinktwice.strategies.gate:ConfidenceGate",
               "one sample if a signal is confident, else sample more and vote")
strategies.add("rpc", "thinktwice.strategies.rpc:RPC", "reasoning pruning + perplexity consistency")
strategies.add("usc", "thinktwice.strategies.aggregate:UniversalSelfConsistency",
               "the model picks the most consistent response")
strategies.add("self-agreement", "thinktwice.strategies.aggregate:SelfAgreement",
               "the model states the answer most responses agree on")
strategies.add("gsa", "thinktwice.strategies.aggregate:GenerativeSelfAggregation",
               "the model writes a new answer from the samples")
strategies.add("self-refine", "thinktwice.strategies.refine:SelfRefine",
               "feedback then revise, up to 4 rounds; flips recorded when gold is known")
strategies.add("confidence-refine", "thinktwice.strategies.refine:ConfidenceRefine",
               "self-refine only when a signal is below its threshold")
strategies.add("fobar", "thinktwice.strategies.backward:Fobar", "forward vote x backward verification")
strategies.add("iterative-deepening", "thinktwice.strategies.deepening:IterativeDeepening",
               "on low confidence append 'Wait,' and let the model reconsider, up to d times")
strategies.add("step-beam", "thinktwice.strategies.search:StepBeamSearch",
               "beam search over newline-delimited steps, self-evaluated")
strategies.add("mcts", "thinktwice.strategies.search:MCTS", "PUCT tree search over reasoning steps")

strategies.add("critique-correct", "thinktwice.strategies.critique_correct:CritiqueCorrect",
               "solve, then critique-and-correct for k rounds (RealCritic)")

def create_strategy(spec: str, /, **options: object) -> Strategy:
    """Build a strategy from a spec such as ``"self-consistency"`` or ``"best-of-n:self-certainty"``.

    The part after the colon is passed as ``signal=``. Options are checked against the strategy's
    fields first: an unknown name or a value of the wrong type is a ConfigError naming the option,
    the type it needs and the options the strategy accepts.
    """
    from thinktwice.registry import check_options

    name, sep, arg = spec.partition(":")
    factory = strategies.get(name)
    if sep:
        options = {"signal": arg, **options}
    check_options("strategy", name, factory, options)
    return factory(**options)  # type: ignore[no-any-return]


def strategy_names() -> list[str]:
    """Registered strategy names."""
    return strategies.names()


__all__ += ["create_strategy", "strategy_names"]
