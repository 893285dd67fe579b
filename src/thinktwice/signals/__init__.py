"""Self-evaluation signals: score candidates from token statistics, agreement, or extra model calls."""

from __future__ import annotations

from thinktwice.registry import signals
from thinktwice.signals.base import Signal, check_requires

__all__ = ["Signal", "check_requires", "signals"]
