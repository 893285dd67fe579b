"""Saving and loading organism checkpoints: one ``.pt`` file with the config, vocabulary and weights.

Weights are stored in float16 (half the size; loaded back to float32), everything else as plain
Python values, so ``torch.load(weights_only=True)`` reads it. ``path`` may name the file or a
directory holding ``model.pt``. The ``small`` checkpoint ships inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from thinktwice.errors import ConfigError
from thinktwice.organism.model import GPT, GPTConfig
from thinktwice.organism.tokenizer import Tokenizer

__all__ = ["FILE", "Checkpoint", "load", "resolve", "save", "shipped_path"]

FILE = "model.pt"
FORMAT = "thinktwice-organism/1"


@dataclass
class Checkpoint:
    model: GPT
    tokenizer: Tokenizer
    meta: dict[str, Any] = field(default_factory=dict)


def shipped_path(name: str = "small") -> Path:
    """The checkpoint shipped in the package."""
    return Path(str(resources.files("thinktwice.organism") / "checkpoints" / f"{name}.pt"))


def resolve(path: str | Path | None) -> Path:
    """The checkpoint file for ``path`` (a file, a directory with ``model.pt``, or None = shipped)."""
    p = shipped_path() if path is None else Path(path)
    if p.is_dir():
        p = p / FILE
    if not p.is_file():
        raise ConfigError(f"no organism checkpoint at {p} (train one: thinktwice organism train --out DIR)")
    return p


def save(ckpt: Checkpoint, path: str | Path) -> Path:
    p = Path(path)
    if p.suffix != ".pt":
        p.mkdir(parents=True, exist_ok=True)
        p = p / FILE
    state = {k: v.detach().to("cpu", torch.float16) for k, v in ckpt.model.state_dict().items()}
    torch.save({"format": FORMAT, "config": ckpt.model.cfg.to_dict(), "vocab": ckpt.tokenizer.vocab,
                "meta": ckpt.meta, "state_dict": state}, p)
    return p


def load(path: str | Path | None = None, device: str = "cpu") -> Checkpoint:
    p = resolve(path)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file
        raise ConfigError(f"{p} is not an organism checkpoint: {e}") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"{p} is not an organism checkpoint (format {FORMAT})")
    model = GPT(GPTConfig(**blob["config"]))
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    model.to(device).eval()
    return Checkpoint(model, Tokenizer.from_vocab(blob["vocab"]), dict(blob.get("meta", {})))
