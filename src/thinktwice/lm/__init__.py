"""Model backends behind one async protocol. Heavy backends are registered lazily."""

from __future__ import annotations

from typing import Any

from thinktwice.lm.base import Backend, TokenMonitor, estimate_tokens
from thinktwice.lm.meter import BudgetExhausted, Meter
from thinktwice.registry import backends, check_options

__all__ = ["Backend", "TokenMonitor", "Meter", "BudgetExhausted", "create", "estimate_tokens", "parse_spec"]

backends.add("scripted", "thinktwice.lm.scripted:ScriptedBackend", "deterministic fake for tests")
backends.add("openai", "thinktwice.lm.openai:OpenAIBackend", "any OpenAI-compatible HTTP server")
backends.add("llamacpp", "thinktwice.lm.llamacpp:LlamaCppBackend", "embedded llama.cpp (default: SmolLM2-135M)")
backends.add("organism", "thinktwice.lm.organism:OrganismBackend", "the tiny from-scratch arithmetic model")
backends.add("hf", "thinktwice.lm.hf:HFBackend", "transformers causal LM in-process (CPU/CUDA)")

DEFAULT_BACKEND = "llamacpp"


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"name:ARG"`` (e.g. ``organism:runs/small``) into the backend name and its argument."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def create(spec: str = DEFAULT_BACKEND, /, **options: Any) -> Backend:
    """Build a backend from a spec such as ``"openai"``, ``"llamacpp:model.gguf"`` or ``"organism:DIR"``.

    The part after the colon is passed as ``path=``. Options are checked against the backend's
    constructor first: an unknown name or a value of the wrong type is a ConfigError naming it.
    """
    name, arg = parse_spec(spec)
    factory = backends.get(name)
    if arg is not None:
        options = {"path": arg, **options}
    check_options("backend", name, factory, options)
    return factory(**options)  # type: ignore[no-any-return]
