"""Errors raised by the training engine.

Each error says what went wrong and what the user can do about it, so that a
failed `kedro run` is actionable from its last line.
"""

from __future__ import annotations

from pathlib import Path


class TrainingError(RuntimeError):
    """Base class for every error raised by `medgen.training`."""


class ConfigError(TrainingError, ValueError):
    """A training or resources parameter is unknown, missing or out of range."""


class CheckpointError(TrainingError):
    """A checkpoint could not be written, read, or does not match the run."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or Inf; training stopped before the weights were touched.

    `step` is the optimizer step that produced the bad loss (1-based, i.e. the step
    that would have been completed) and `checkpoint_path` the last good checkpoint
    on disk, or None when no checkpoint directory was configured or none was written
    yet.
    """

    def __init__(self, step: int, loss: float, checkpoint_path: Path | None):
        self.step = step
        self.loss = loss
        self.checkpoint_path = checkpoint_path
        where = (
            f"last good checkpoint: {checkpoint_path}"
            if checkpoint_path is not None
            else "no checkpoint was written before it"
        )
        super().__init__(
            f"non-finite loss ({loss}) at optimizer step {step}; training stopped "
            f"without applying that update ({where}). Lower the learning rate, enable "
            f"gradient clipping (max_grad_norm) or check the inputs for NaN/Inf."
        )
