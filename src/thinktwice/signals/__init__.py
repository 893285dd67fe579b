"""Self-evaluation signals: score candidates from token statistics, agreement, or extra model calls."""

from __future__ import annotations

from thinktwice.registry import signals
from thinktwice.signals.base import Signal, check_requires

__all__ = ["Signal", "check_requires", "signals"]

# token statistics of the samples themselves (no extra calls)
signals.add("mean-logprob", "thinktwice.signals.confidence:MeanLogprob", "mean chosen-token logprob")
signals.add("seq-logprob", "thinktwice.signals.confidence:SeqLogprob", "sequence log-likelihood")
signals.add("path-prob", "thinktwice.signals.confidence:PathProb", "exp(mean logprob), RPC path probability")
signals.add("token-entropy", "thinktwice.signals.confidence:TokenEntropy", "negated mean token entropy (full vocab)")
signals.add("self-certainty", "thinktwice.signals.confidence:SelfCertainty", "mean KL(U||p), arXiv 2502.18581")
signals.add("deepconf-mean", "thinktwice.signals.confidence:DeepConfMean", "DeepConf mean token confidence")
signals.add("deepconf-tail", "thinktwice.signals.confidence:DeepConfTail", "DeepConf tail confidence")
signals.add("deepconf-bottom10", "thinktwice.signals.confidence:DeepConfBottom10", "DeepConf bottom-10% groups")
signals.add("deepconf-lowest", "thinktwice.signals.confidence:DeepConfLowest", "DeepConf lowest group")
# agreement among the samples of a question
signals.add("vote-share", "thinktwice.signals.consistency:VoteShare", "share of samples with the same answer")
signals.add("rpc", "thinktwice.signals.consistency:RPC", "perplexity consistency with reasoning pruning")
signals.add("answer-entropy", "thinktwice.signals.consistency:AnswerEntropy", "1 - normalised answer entropy")
signals.add("usc-agreement", "thinktwice.signals.consistency:USCAgreement", "model names the most consistent")
# extra model calls
signals.add("p-true", "thinktwice.signals.p_true:PTrue", "P(True), arXiv 2207.05221")
signals.add("p-true-context", "thinktwice.signals.p_true:PTrueContext", "P(True) with other samples shown")
signals.add("verbalized", "thinktwice.signals.verbalized:Verbalized", "stated confidence 0-100")
signals.add("self-critique", "thinktwice.signals.critique:SelfCritique", "step-by-step review with a verdict")
signals.add("fobar", "thinktwice.signals.backward:Fobar", "backward verification, arXiv 2308.07758")
signals.add("self-verification", "thinktwice.signals.backward:SelfVerification", "arXiv 2212.09561")
signals.add("step-critic", "thinktwice.signals.step_critic:StepCritic", "earliest wrong step (ProcessBench-style)")
# external verifiers (no model calls)
signals.add("code-exec", "thinktwice.signals.verifier:CodeExecutionSignal", "runs the code against the tests")
signals.add("reward-model", "thinktwice.signals.verifier:RewardModelSignal", "external reward model over HTTP")
# latent layer (hidden states; the hf backend)
signals.add("logit-lens", "thinktwice.signals.latent:LogitLens", "how early in depth the answer token is top-1")
signals.add("logit-lens-stability", "thinktwice.signals.latent:LogitLensStability", "answer top-1 share of last layers")
signals.add("probe", "thinktwice.signals.latent:ProbeSignal", "linear probe on a hidden state (probe:PATH)")
