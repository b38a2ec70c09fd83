"""Text → image as a mode of the diffusion core.

The condition is a tokenised prompt, int64 ids ``[B, L]`` under ``batch[tokens_key]``, handed to a
text-conditioned network as ``tokens=`` (see :mod:`medgen.diffusion.guidance`); it adds no input
channels. Classifier-free guidance drops it to all padding, which the network reads as the empty
prompt. The image modality is part of the prompt ("Brain MRI, FLAIR: ..."), so one text path
carries both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medgen.diffusion.guidance import is_token_ids
from medgen.diffusion.modes import MODES, DiffusionMode


@MODES.register("text")
class TextMode(DiffusionMode):
    """Prompt → image.

    Args:
        modalities: channel names of ``batch["images"]`` (e.g. ``["gray"]``); all are generated.
        tokens_key: batch key of the token ids (default ``"tokens"``).
    """

    name = "text"

    def __init__(self, modalities: Sequence[str], tokens_key: str = "tokens") -> None:
        self.target_names = tuple(str(m) for m in modalities)
        self.tokens_key = str(tokens_key)
        super().__init__(modalities)

    @property
    def condition_names(self) -> tuple[str, ...]:
        return (self.tokens_key,)

    @property
    def condition_channels(self) -> int:
        return 0

    @property
    def spatial_condition(self) -> bool:
        return False

    def options(self) -> dict[str, Any]:
        return {"tokens_key": self.tokens_key}

    def check_tokens(self, tokens: Any) -> torch.Tensor:
        """``tokens`` as int64 ``[B, L]``; ``ValueError`` naming a wrong shape or dtype."""
        if not isinstance(tokens, torch.Tensor) or not is_token_ids(tokens):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens)
            raise ValueError(
                f"mode 'text': token ids must be an integer tensor [B, L], got {shape}"
            )
        return tokens.long()

    def condition(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.tokens_key not in batch:
            raise KeyError(
                f"mode 'text' needs batch[{self.tokens_key!r}]; batch has {sorted(batch)}"
            )
        return self.check_tokens(batch[self.tokens_key])
