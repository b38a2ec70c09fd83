"""Classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598).

A condition is *spatial* (``[B, Cc, *spatial]`` float, e.g. the lesion mask, concatenated to the
noisy input along channels), *class labels* (``[B]`` integers, passed to the network as
``class_labels=``, e.g. for :class:`~medgen.models.dit.DiT`) or *token ids* (``[B, L]`` integers,
a tokenised prompt, passed as ``tokens=`` to a text-conditioned network that encodes them itself,
e.g. :class:`~medgen.text2image.network.TextConditionedUNet`); :func:`is_class_labels` and
:func:`is_token_ids` tell them apart.

Training drops the condition of each sample independently with probability ``p`` and replaces it
by the *null condition*. For a spatial condition that is an all-zero tensor of the same shape. Zero
is chosen because the lesion condition lives in {-1, +1}: zero is outside it, whereas MONAI's
``DiffusionInferer`` default fill of -1 would be identical to a real "no lesion" mask and teach the
unconditional branch that every image is lesion-free. For class labels it is the label -1
(:data:`~medgen.models.dit.NULL_CLASS`), which the network embeds with its own learned row, as in
DiT. For token ids it is all zeros, i.e. all padding (pad id 0), which a text-conditioned network
reads as the empty prompt: caption dropout to the empty prompt. At sampling the two predictions are combined as ``out = uncond + s · (cond − uncond)``;
``s = 1`` is the plain conditional model and is evaluated with one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medgen.diffusion.rng import rand
from medgen.models.dit import NULL_CLASS

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def is_class_labels(cond: torch.Tensor) -> bool:
    """Whether ``cond`` is a class-label condition (1-D integer tensor) rather than a spatial one.

    Booleans are not labels (their null value -1 does not exist): convert them to int64 first.
    """
    return cond.ndim == 1 and cond.dtype in _INTEGER_DTYPES


def is_token_ids(cond: torch.Tensor) -> bool:
    """Whether ``cond`` is a tokenised prompt ``[B, L]`` (2-D integer tensor)."""
    return cond.ndim == 2 and cond.dtype in _INTEGER_DTYPES


def null_condition(cond: torch.Tensor) -> torch.Tensor:
    """The condition meaning "no condition": label -1 for class labels, zeros for a spatial one
    and for token ids (all padding: the empty prompt)."""
    if is_class_labels(cond):
        return torch.full_like(cond, NULL_CLASS)
    return torch.zeros_like(cond)


def drop_condition(
    cond: torch.Tensor, prob: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace the condition of each sample by :func:`null_condition` with probability ``prob``.

    Sample ``i`` is dropped when the ``i``-th uniform draw of ``generator`` is below ``prob``.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"condition dropout probability must be in [0, 1], got {prob}")
    if prob == 0.0:
        return cond
    keep = rand((cond.shape[0],), generator, cond.device) >= prob
    keep = keep.view(-1, *([1] * (cond.ndim - 1)))
    return torch.where(keep, cond, null_condition(cond))


def combine_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def model_forward(
    model: nn.Module, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None
) -> torch.Tensor:
    """Call ``model`` with its condition: class labels as ``model(x, t, class_labels=cond)``, token
    ids as ``model(x, t, tokens=cond)``, a spatial condition concatenated to the noisy input along
    channels (the strategies check shapes once, on entry). Everything goes through ``model``'s
    forward, as DDP requires."""
    if cond is None:
        return model(x, timesteps)
    if is_class_labels(cond):
        return model(x, timesteps, class_labels=cond)
    if is_token_ids(cond):
        return model(x, timesteps, tokens=cond)
    return model(torch.cat([x, cond.to(dtype=x.dtype)], dim=1), timesteps)


#: ``forward(model, x, timesteps, cond)``: one network call with its condition.
ModelForward = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def guided_model(
    model: nn.Module,
    cond: torch.Tensor | None,
    guidance_scale: float,
    forward: ModelForward = model_forward,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``denoise(x, timesteps)``: the model output under classifier-free guidance.

    With a condition and ``guidance_scale != 1`` the conditional and null-conditional inputs are
    stacked into one batch of ``2B`` so each network evaluation is still exactly one call. The
    condition half of that batch is built here, once per sampling run, not at every step.
    ``forward`` makes that call (default :func:`model_forward`; a strategy passes its
    preconditioned ``predict``, so guidance combines preconditioned outputs).
    """
    if cond is None or guidance_scale == 1.0:
        return lambda x, timesteps: forward(model, x, timesteps, cond)
    both = torch.cat([cond, null_condition(cond)])

    def denoise(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        out = forward(model, torch.cat([x, x]), torch.cat([timesteps, timesteps]), both)
        out_cond, out_uncond = out.chunk(2)
        return combine_guidance(out_uncond, out_cond, guidance_scale)

    return denoise
