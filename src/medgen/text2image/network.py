"""`TextConditionedUNet`: a small CLIP-style text encoder and a cross-attention UNet, trained
jointly from scratch on the captions (text+modality → image generation).

The conditioning contract with :mod:`medgen.diffusion` (``guidance.model_forward``):

* a text condition is int64 token ids ``[B, L]`` from `medgen.text2image.tokenizer`
  (``[BOS] words… [EOS] [PAD]…``, ``[PAD]`` = 0); the strategies call the network as
  ``model(x, timesteps, tokens=ids)`` and use its output tensor;
* the NULL condition of token ids (classifier-free guidance at sampling, caption dropout in
  training) is all zeros, i.e. all padding. The network reads such a row as the EMPTY PROMPT: it
  is replaced by the empty prompt's ids ``[BOS, EOS, PAD, …]`` before encoding, so "no caption"
  is one learned text embedding whose ``[BOS]`` and ``[EOS]`` positions are attended to, like any
  prompt's. ``tokens=None`` means the empty prompt for every row.

The text encoder is a `transformers` ``CLIPTextModel`` built from a config (causal transformer,
padding masked by ``ids != PAD``); the UNet cross-attends to its ``last_hidden_state`` and also
ignores padded positions (``encoder_attention_mask``). CLIP's pooled output is not used (in the
installed transformers it pools at the first ``eos_token_id``, set here to the tokenizer's real
``[EOS]``; the legacy argmax pooling applies only when ``eos_token_id == 2``, and ``[EOS]`` is 3).
Both parts are trained together by the one loss: there are no pretrained weights to freeze.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.text2image.tokenizer import PAD_ID

TOKENIZER_INFO_KEYS = ("vocab_size", "bos_id", "eos_id", "max_length")


@dataclass(frozen=True)
class TextConditionedUNetConfig:
    """Sizes of `TextConditionedUNet` (values in ``conf/base``; no defaults in code).

    Text encoder (CLIP-style causal transformer):
        text_hidden_size: width, also the UNet's ``cross_attention_dim`` (e.g. 64).
        text_layers / text_heads: transformer layers and attention heads (e.g. 2 / 4).
        text_intermediate_size: MLP width (e.g. 4 × text_hidden_size).
    UNet (diffusers ``UNet2DConditionModel``):
        block_out_channels: widths per resolution (e.g. [32, 64, 64]).
        down_block_types / up_block_types: e.g. [CrossAttnDownBlock2D, CrossAttnDownBlock2D,
            DownBlock2D] / [UpBlock2D, CrossAttnUpBlock2D, CrossAttnUpBlock2D].
        layers_per_block: ResNet layers per block (e.g. 1).
        attention_head_dim: diffusers' legacy name: it is read as the NUMBER of heads of each
            cross-attention block (e.g. 4), not channels per head.
        pooled_text_embedding: also add the prompt's mean hidden state (over its non-padding
            tokens), projected, to the timestep embedding (``class_embed_type="projection"``,
            as SDXL adds pooled text): a global path for what a prompt says about the whole
            image (the modality), beside cross-attention's spatial one.
        norm_num_groups: GroupNorm groups, dividing every width (e.g. 8).
        sample_size: the image side it is built for (e.g. 64); any side divisible by
            ``2 ** (len(block_out_channels) - 1)`` runs.
    """

    text_hidden_size: int
    text_layers: int
    text_heads: int
    text_intermediate_size: int
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int
    attention_head_dim: int
    norm_num_groups: int
    sample_size: int
    pooled_text_embedding: bool

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, section: str = "text2image.network"
    ) -> TextConditionedUNetConfig:
        """From a ``params:`` block; unknown keys fail with a hint, missing ones are named."""
        config = config_tree_from_params(cls, params, section)
        require_positive_ints(
            config,
            section,
            "text_hidden_size",
            "text_layers",
            "text_heads",
            "text_intermediate_size",
            "layers_per_block",
            "attention_head_dim",
            "norm_num_groups",
            "sample_size",
        )
        if config.text_hidden_size % config.text_heads:
            raise ValueError(
                f"{section}.text_hidden_size={config.text_hidden_size} must be divisible by "
                f"text_heads={config.text_heads}"
            )
        levels = len(config.block_out_channels)
        if not levels or {len(config.down_block_types), len(config.up_block_types)} != {levels}:
            raise ValueError(
                f"{section}: block_out_channels, down_block_types and up_block_types need one "
                f"entry per level; got {levels}, {len(config.down_block_types)}, "
                f"{len(config.up_block_types)}"
            )
        bad = [w for w in config.block_out_channels if w % config.norm_num_groups]
        if bad:
            raise ValueError(
                f"{section}.norm_num_groups={config.norm_num_groups} must divide every "
                f"block_out_channels entry; {bad} are not divisible"
            )
        return config


class TextConditionedUNet(nn.Module):
    """Text encoder + cross-attention UNet; ``forward(x, timesteps, tokens=None)`` (see the module
    docstring for the token contract).

    Args:
        text_encoder: a ``CLIPTextModel`` whose vocabulary is the tokenizer's.
        unet: a ``UNet2DConditionModel`` with ``cross_attention_dim`` = the encoder's width.
        empty_prompt: the empty prompt's ids ``[L]`` (``[BOS, EOS, PAD, …]``).
    """

    def __init__(
        self, text_encoder: CLIPTextModel, unet: UNet2DConditionModel, empty_prompt: torch.Tensor
    ) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.unet = unet
        # Derived from the tokenizer, not learned: not part of the state dict.
        self.register_buffer("empty_prompt", empty_prompt.long().clone(), persistent=False)

    @property
    def max_length(self) -> int:
        return int(self.empty_prompt.shape[0])

    def prepare_tokens(self, tokens: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``tokens`` with every all-padding row (the null condition) replaced by the empty
        prompt; ``None``: the empty prompt for all ``batch`` rows."""
        empty = self.empty_prompt
        if tokens is None:
            return empty.expand(batch, -1)
        if tokens.ndim != 2 or tokens.shape != (batch, self.max_length):
            raise ValueError(
                f"tokens must be [{batch}, {self.max_length}] ids, got {tuple(tokens.shape)}"
            )
        tokens = tokens.to(device=empty.device, dtype=torch.long)
        null = (tokens == PAD_ID).all(dim=1, keepdim=True)
        return torch.where(null, empty.expand_as(tokens), tokens)

    def encode_text(self, tokens: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, ...]:
        """``(hidden states [B, L, D], attention mask [B, L])`` of the prompts."""
        ids = self.prepare_tokens(tokens, batch)
        mask = (ids != PAD_ID).long()
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden, mask

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden, mask = self.encode_text(tokens, x.shape[0])
        pooled = None
        if self.unet.config.class_embed_type == "projection":
            weight = mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        return self.unet(
            x,
            timesteps,
            encoder_hidden_states=hidden,
            encoder_attention_mask=mask,
            class_labels=pooled,
        ).sample


def checked_tokenizer_info(tokenizer_info: Mapping[str, int]) -> dict[str, int]:
    """The `TOKENIZER_INFO_KEYS` of ``tokenizer_info`` as ints; ValueError naming missing ones."""
    missing = [k for k in TOKENIZER_INFO_KEYS if k not in tokenizer_info]
    if missing:
        raise ValueError(f"tokenizer_info lacks {missing} (use tokenizer.tokenizer_info)")
    return {k: int(tokenizer_info[k]) for k in TOKENIZER_INFO_KEYS}


def build_text_encoder(
    tokenizer_info: Mapping[str, int],
    *,
    hidden_size: int,
    intermediate_size: int,
    layers: int,
    heads: int,
) -> CLIPTextModel:
    """A freshly initialised CLIP-style text encoder over the prompt tokenizer's vocabulary
    (seed torch before calling); the one text-encoder construction of text2image, shared by
    the generator and the alignment scorer (`medgen.text2image.alignment`). Its pooled output
    is the hidden state at the first ``[EOS]`` (see the module docstring)."""
    info = checked_tokenizer_info(tokenizer_info)
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=info["vocab_size"],
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=info["max_length"],
            pad_token_id=PAD_ID,
            bos_token_id=info["bos_id"],
            eos_token_id=info["eos_id"],
        )
    )


def build_text_conditioned_unet(
    config: Mapping[str, Any] | TextConditionedUNetConfig,
    tokenizer_info: Mapping[str, int],
    in_channels: int,
    out_channels: int,
) -> TextConditionedUNet:
    """A freshly initialised `TextConditionedUNet` (seed torch before calling).

    ``tokenizer_info``: `medgen.text2image.tokenizer.tokenizer_info` of the prompt tokenizer
    (``vocab_size``, ``bos_id``, ``eos_id``, ``max_length``).
    """
    if not isinstance(config, TextConditionedUNetConfig):
        config = TextConditionedUNetConfig.from_params(config)
    info = checked_tokenizer_info(tokenizer_info)
    text_encoder = build_text_encoder(
        info,
        hidden_size=config.text_hidden_size,
        intermediate_size=config.text_intermediate_size,
        layers=config.text_layers,
        heads=config.text_heads,
    )
    unet = UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=config.block_out_channels,
        down_block_types=config.down_block_types,
        up_block_types=config.up_block_types,
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=config.text_hidden_size,
        class_embed_type="projection" if config.pooled_text_embedding else None,
        projection_class_embeddings_input_dim=(
            config.text_hidden_size if config.pooled_text_embedding else None
        ),
    )
    empty = torch.full((info["max_length"],), PAD_ID, dtype=torch.long)
    empty[0], empty[1] = info["bos_id"], info["eos_id"]
    return TextConditionedUNet(text_encoder, unet, empty)
