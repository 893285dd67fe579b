"""What one request may cost: caps on the strategy options a client sets, the per-request work
budget (prompts x choices x samples, and generated tokens), and the ``max_tokens`` cap policy.

Every check runs before any upstream call and fails with a 400 that names the field and the cap.
Server settings come from ServeConfig; the fields added for this module are read with defaults
(``max_request_samples``, ``max_request_tokens``, ``max_tokens_policy``) until ServeConfig has them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from thinktwice.serve.errors import ProxyError

__all__ = [
    "SAMPLE_OPTIONS",
    "TOKEN_OPTIONS",
    "Work",
    "check_options",
    "check_work",
    "clamp_max_tokens",
    "decision_work",
    "is_sampling",
    "request_caps",
]

# Strategy options that size how many samples (or rounds, each at least one sample) a decision
# draws: capped by ``max_samples``. The ones in the first group also make a strategy "sampling"
# (it compares several samples of one prompt, so it never samples at temperature 0).
_COUNTS = frozenset({"n", "max_samples", "m_f", "m_b", "more", "warm_up", "n_actions", "beam_width"})
_ROUNDS = frozenset({"batch", "n_iters", "max_rounds", "rounds", "depth", "max_depth", "max_masks"})
SAMPLE_OPTIONS = _COUNTS | _ROUNDS
# Options that size the tokens of one generation: capped by ``max_tokens``.
TOKEN_OPTIONS = frozenset(
    {
        "max_tokens",
        "aggregate_max_tokens",
        "feedback_max_tokens",
        "critic_max_tokens",
        "backward_max_tokens",
        "max_step_tokens",
    }
)
_TOP_LOGPROBS = 20  # the OpenAI API's limit (DeepConf's ``k``)


def request_caps(config: Any) -> tuple[int, int]:
    """(samples, generated tokens) one request may cause at most; by default ``max_n`` decisions at
    the per-decision caps, so a single-prompt request within ``--max-n`` is never refused."""
    samples = getattr(config, "max_request_samples", None) or config.max_n * config.max_samples
    tokens = getattr(config, "max_request_tokens", None) or config.max_n * config.budget_tokens
    return int(samples), int(tokens)


def _strategy_fields(factory: Any) -> dict[str, Any]:
    if not (isinstance(factory, type) and dataclasses.is_dataclass(factory)):
        return {}
    return {
        f.name: (f.default if f.default is not dataclasses.MISSING else None)
        for f in dataclasses.fields(factory)
    }


def is_sampling(factory: Any) -> bool:
    """True for strategies that compare several samples of one prompt (they have a sample count)."""
    return bool(_COUNTS & set(_strategy_fields(factory)))


def check_options(options: Mapping[str, Any], config: Any) -> None:
    """Refuse client-set strategy options that would size work beyond the server's caps."""
    for name, value in options.items():
        if name in SAMPLE_OPTIONS:
            cap, flag = config.max_samples, "--max-samples"
        elif name in TOKEN_OPTIONS:
            cap, flag = config.max_tokens, "--max-tokens"
        elif name == "k":
            cap, flag = _TOP_LOGPROBS, "the API's top_logprobs limit"
        elif name == "window":
            cap, flag = config.budget_tokens, "--budget-tokens"
        else:
            continue
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProxyError(
                400, f"thinktwice.{name} must be an integer, got {value!r}.", param=f"thinktwice.{name}"
            )
        if value > cap:
            raise ProxyError(
                400,
                f"thinktwice.{name}={value} is above this server's cap of {cap} ({flag}).",
                param=f"thinktwice.{name}",
                code="option_above_cap",
            )


@dataclass(frozen=True)
class Work:
    """The most upstream work a request can cause: generated sequences and generated tokens."""

    samples: int
    tokens: int


def decision_work(
    factory: Any, options: Mapping[str, Any], max_tokens: int, budget_tokens: int, max_samples: int
) -> Work:
    """The most one decision of this strategy can spend: its nominal sample count (``n``, ``max_samples``,
    one plus ``more``; one for strategies with no sizing option; else the cap), bounded by the
    per-decision caps the Meter enforces."""
    fields = _strategy_fields(factory)
    values = {**fields, **{k: v for k, v in options.items() if k in fields}}
    sizing = SAMPLE_OPTIONS & set(fields)
    nominal: int | None
    if factory is None or not sizing:
        nominal = 1
    elif sizing <= {"n", "batch"} and isinstance(values.get("n"), int):
        nominal = values["n"] + (1 if "aggregate_max_tokens" in fields else 0)
    elif sizing <= {"max_samples", "batch", "warm_up"} and isinstance(values.get("max_samples"), int):
        nominal = values["max_samples"]
    elif sizing <= {"more", "batch"} and isinstance(values.get("more"), int):
        nominal = 1 + values["more"]
    else:
        nominal = None
    samples = max_samples if nominal is None else max(1, min(nominal, max_samples))
    return Work(samples, min(budget_tokens, samples * max_tokens))


def check_work(decisions: int, per_decision: Work, config: Any, *, prompts: int, choices: int) -> None:
    """Refuse a request whose ``decisions`` could together exceed the per-request budget."""
    cap_samples, cap_tokens = request_caps(config)
    samples, tokens = decisions * per_decision.samples, decisions * per_decision.tokens
    how = f"{prompts} prompt(s) x {choices} choice(s) x up to {per_decision.samples} sample(s)"
    param = "prompt" if prompts > 1 else "n"
    if samples > cap_samples:
        raise ProxyError(
            400,
            f"This request could cause {samples} upstream samples ({how}), above this server's "
            f"per-request budget of {cap_samples} (--max-request-samples). Send fewer prompts or choices.",
            param=param,
            code="request_budget_exceeded",
        )
    if tokens > cap_tokens:
        raise ProxyError(
            400,
            f"This request could generate {tokens} tokens ({how}, up to {per_decision.tokens} tokens per "
            f"decision), above this server's per-request budget of {cap_tokens} (--max-request-tokens). "
            "Send fewer prompts or choices, or a smaller max_tokens.",
            param=param,
            code="request_budget_exceeded",
        )


def clamp_max_tokens(value: int | None, field: str, config: Any) -> tuple[int | None, str | None]:
    """``value`` within the server's ``max_tokens`` cap and the warning to send when it was clamped.

    ``max_tokens_policy`` "clamp" (default) lowers it; "refuse" answers 400.
    """
    cap = config.max_tokens
    if value is None or value <= cap:
        return value, None
    if getattr(config, "max_tokens_policy", "clamp") == "refuse":
        raise ProxyError(400, f"{field}={value} is above this server's cap of {cap}.", param=field)
    return cap, f'299 thinktwice "{field}={value} was clamped to this server\'s cap of {cap}"'
