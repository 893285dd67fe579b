"""Verification by execution: a sandbox for untrusted code."""

from __future__ import annotations

from thinktwice.verify.bwrap import BwrapSupport, bwrap_support
from thinktwice.verify.sandbox import (
    ISOLATIONS,
    SandboxConfig,
    SandboxResult,
    check_isolation,
    run_sandboxed,
)

__all__ = ["ISOLATIONS", "BwrapSupport", "SandboxConfig", "SandboxResult", "bwrap_support", "check_isolation",
           "run_sandboxed"]
