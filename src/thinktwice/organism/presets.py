"""Training presets: model size, training length and the training-data mixture.

Budgets are in optimizer steps, never wall-clock, so a seed gives the same checkpoint on the same
machine however busy it is. Times below are for 2 CPU cores (torch CPU) and one H100.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from thinktwice.errors import ConfigError
from thinktwice.organism.model import GPTConfig

__all__ = ["PRESETS", "TrainConfig", "preset"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (with the seed)."""

    model: GPTConfig
    steps: int  # optimizer steps
    batch_size: int = 16  # rows of ``model.block_size`` tokens, packed with whole problems
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    train_min_steps: int = 1  # problems in training have min_steps..max_steps events
    train_max_steps: int = 7  # one more than the default test difficulty, so 5 is not the edge
    distractor_prob: float = 0.25  # share of training problems with one distractor sentence
    seed: int = 0
    eval_every: int = 0  # 0 = only at the end

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be >= 1")
        if not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"need 0 < min_lr <= lr, got {self.min_lr}, {self.lr}")
        if not 1 <= self.train_min_steps <= self.train_max_steps:
            raise ConfigError("need 1 <= train_min_steps <= train_max_steps")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "model": GPTConfig(**d["model"])})


PRESETS: dict[str, TrainConfig] = {
    # CI: learns the format and the easy problems in < 3 minutes on 2 cores.
    "tiny": TrainConfig(GPTConfig(n_layer=3, n_head=4, n_embd=128), steps=600, batch_size=12),
    # The calibrated organism: < 15 minutes on 2 cores, about a minute on an H100.
    "small": TrainConfig(GPTConfig(n_layer=4, n_head=6, n_embd=192), steps=2000),
    # GPU only: wider and longer.
    "medium": TrainConfig(GPTConfig(n_layer=6, n_head=8, n_embd=256), steps=6000, batch_size=32),
    # Tests: a few dozen steps of a micro model.
    "micro": TrainConfig(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=192), steps=20, batch_size=4,
                         warmup=5),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset, with fields replaced by ``overrides`` (``steps=...``, ``seed=...``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown organism preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
