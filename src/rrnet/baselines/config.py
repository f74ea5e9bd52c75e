"""Baseline kinds and their training hyper-parameters, as plain values (recorded in `baseline.json`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rrnet.errors import RRNetError

KINDS: tuple[str, ...] = ("personalized", "textual_inversion", "lora")

# The paper gives only the LoRA rate (Appendix A: 1e-4). The others are the usual rates of the
# methods they stand for: DreamBooth's text-encoder rate and diffusers' textual-inversion example.
DEFAULT_LEARNING_RATES: dict[str, float] = {"personalized": 5e-6, "textual_inversion": 5e-4, "lora": 1e-4}

LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def normalize_kind(kind: str) -> str:
    """`textual-inversion` (CLI spelling) and `textual_inversion` name the same baseline."""
    normal = kind.strip().lower().replace("-", "_")
    if normal not in KINDS:
        raise RRNetError(f"unknown baseline {kind!r}; choose one of {', '.join(KINDS)}")
    return normal


@dataclass
class BaselineConfig:
    """Training settings shared by the three baselines; unused fields are ignored by a kind.

    One epoch is one pass over every exemplar of both prompts (prompt images with the prompt,
    swapped images with the swapped prompt), in a seeded random order, `batch_size` at a time.
    Timesteps are uniform, as in the personalization methods these baselines stand for; set
    `importance_sampling` to draw them like RRNet (p(t) ~ 1 - 0.5 cos(pi t / T)).
    """

    epochs: int = 100
    learning_rate: float | None = None  # None: DEFAULT_LEARNING_RATES[kind]
    batch_size: int = 1
    weight_decay: float = 0.01
    importance_sampling: bool = False
    resolution: int | None = None
    seed: int = 0
    # textual inversion: one token per direction (default) or one token shared by both prompts
    shared_token: bool = False
    # LoRA on the UNet attention projections (Appendix A: rank 4)
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: tuple[str, ...] = field(default=LORA_TARGETS)

    def rate(self, kind: str) -> float:
        """The learning rate for `kind`: the configured one, else the kind's default."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[normalize_kind(kind)]

    def check(self) -> None:
        """One clear line for a value that cannot train."""
        for name in ("epochs", "batch_size", "lora_rank"):
            if getattr(self, name) < 1:
                raise RRNetError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise RRNetError(f"learning_rate must be a finite positive number, got {self.learning_rate}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise RRNetError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
            raise RRNetError(f"lora_alpha must be a finite positive number, got {self.lora_alpha}")
        if not 0 <= self.seed < 2**63:
            raise RRNetError(f"seed must be from 0 to 2**63 - 1, got {self.seed}")
        if self.resolution is not None and self.resolution <= 0:
            raise RRNetError(f"resolution must be positive, got {self.resolution}")
