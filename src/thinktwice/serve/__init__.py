"""The OpenAI-compatible proxy: runs a strategy per request (``thinktwice serve``).

Importing this package imports FastAPI; ``import thinktwice`` does not.
"""

from __future__ import annotations

from thinktwice.serve.app import ServerThread, create_app
from thinktwice.serve.config import PASSTHROUGH, ServeConfig

__all__ = ["PASSTHROUGH", "ServeConfig", "ServerThread", "create_app"]
