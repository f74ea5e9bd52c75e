"""The one exception a stopped training run ends with (kept free of heavy imports for the CLI)."""

from __future__ import annotations

from pathlib import Path


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run between two steps; a checkpoint was written first."""

    RESUME_HINT = "run the same command with --resume_from_checkpoint latest to continue"

    def __init__(self, checkpoint: Path, step: int, hint: str = RESUME_HINT) -> None:
        self.checkpoint, self.step = checkpoint, step
        super().__init__(f"interrupted at step {step}; checkpoint saved to {checkpoint}; {hint}")
