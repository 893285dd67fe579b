"""Verification by execution: a sandbox for untrusted code."""

from __future__ import annotations

from thinktwice.verify.sandbox import SandboxConfig, SandboxResult, run_sandboxed

__all__ = ["SandboxConfig", "SandboxResult", "run_sandboxed"]
