"""thinktwice: make a language model check its own work, and measure what that buys at matched compute."""

from __future__ import annotations

from thinktwice import registry
from thinktwice.errors import (
    BackendError,
    CapabilityError,
    ConfigError,
    DataError,
    StoreError,
    ThinktwiceError,
    UnknownNameError,
)
from thinktwice.types import (
    Budget,
    Candidate,
    Capabilities,
    Decision,
    Message,
    Problem,
    Prompt,
    Sample,
    SamplingParams,
    TokenStat,
    TraceStep,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "registry",
    "Budget",
    "Candidate",
    "Capabilities",
    "Decision",
    "Message",
    "Problem",
    "Prompt",
    "Sample",
    "SamplingParams",
    "TokenStat",
    "TraceStep",
    "Usage",
    "ThinktwiceError",
    "ConfigError",
    "UnknownNameError",
    "CapabilityError",
    "DataError",
    "StoreError",
    "BackendError",
]
