"""Factory for MONAI's :class:`~monai.networks.nets.DiffusionModelUNet` with validated options.

The network is the latent-diffusion UNet of Rombach et al. 2022, "High-Resolution Image Synthesis
with Latent Diffusion Models" (https://arxiv.org/abs/2112.10752) as packaged by Pinaya et al. 2022,
"Brain Imaging Generation with Latent Diffusion Models" (https://arxiv.org/abs/2209.07162).
MONAI already checks some options; this module checks all of them up front and says which key is
wrong and how to fix it, because a bad Kedro parameter otherwise surfaces as a shape error deep
inside a forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.networks.nets import DiffusionModelUNet

from medgen.models.registry import Registry

BACKBONES: Registry = Registry("backbone")

#: Defaults of :func:`build_diffusion_unet`, a small 3-level network that trains on a CPU.
DIFFUSION_UNET_DEFAULTS: dict[str, Any] = {
    "spatial_dims": 2,
    "channels": (32, 64, 64),
    "attention_levels": None,  # None: attention at the deepest level only
    "num_res_blocks": 1,
    "num_head_channels": 32,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "resblock_updown": False,
    "use_flash_attention": False,
}


def _as_int_tuple(key: str, value: Any, length: int) -> tuple[int, ...]:
    values = (value,) * length if isinstance(value, int) else tuple(value)
    if len(values) != length:
        raise ValueError(
            f"diffusion_unet: {key} must be an int or have one entry per level "
            f"({length} levels from channels), got {list(values)}"
        )
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"diffusion_unet: {key} must hold positive integers, got {list(values)}")
    return values


def validate_diffusion_unet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the full, validated keyword set for ``DiffusionModelUNet`` (defaults filled in).

    Raises:
        ValueError: naming the offending key, for unknown keys, ``spatial_dims`` not in {2, 3},
            empty/non-positive ``channels``, a channel count not divisible by ``norm_num_groups``,
            ``attention_levels``/``num_res_blocks``/``num_head_channels`` of the wrong length, or a
            channel count at an attention level (or the always-attentive middle block, which uses
            the last level) not divisible by that level's ``num_head_channels``.
    """
    config = {k: v for k, v in config.items() if k != "name"}
    unknown = sorted(set(config) - set(DIFFUSION_UNET_DEFAULTS))
    if unknown:
        raise ValueError(
            f"diffusion_unet: unknown option(s) {unknown}; allowed: {sorted(DIFFUSION_UNET_DEFAULTS)}"
        )
    cfg = {**DIFFUSION_UNET_DEFAULTS, **config}

    if cfg["spatial_dims"] not in (2, 3):
        raise ValueError(
            f"diffusion_unet: spatial_dims must be 2 or 3, got {cfg['spatial_dims']!r}"
        )
    channels = cfg["channels"]
    if isinstance(channels, int) or len(channels) == 0:
        raise ValueError(f"diffusion_unet: channels must be a non-empty list, got {channels!r}")
    channels = _as_int_tuple("channels", channels, len(channels))
    n_levels = len(channels)

    groups = cfg["norm_num_groups"]
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"diffusion_unet: norm_num_groups must be a positive int, got {groups!r}")
    bad = [c for c in channels if c % groups]
    if bad:
        raise ValueError(
            f"diffusion_unet: every entry of channels must be divisible by norm_num_groups={groups} "
            f"(GroupNorm), but {bad} are not; channels={list(channels)}"
        )

    attention = cfg["attention_levels"]
    if attention is None:
        attention = (False,) * (n_levels - 1) + (True,)
    if isinstance(attention, bool):
        attention = (attention,) * n_levels
    attention = tuple(bool(a) for a in attention)
    if len(attention) != n_levels:
        raise ValueError(
            f"diffusion_unet: attention_levels needs one entry per level ({n_levels}), "
            f"got {list(attention)}"
        )
    res_blocks = _as_int_tuple("num_res_blocks", cfg["num_res_blocks"], n_levels)
    heads = _as_int_tuple("num_head_channels", cfg["num_head_channels"], n_levels)
    for level, (c, attn, h) in enumerate(zip(channels, attention, heads, strict=True)):
        # The middle block always has self-attention over channels[-1] with heads[-1].
        if (attn or level == n_levels - 1) and c % h:
            where = "attention level" if attn else "middle block (last level)"
            raise ValueError(
                f"diffusion_unet: channels[{level}]={c} at the {where} must be divisible by "
                f"num_head_channels[{level}]={h}"
            )

    cfg.update(
        channels=channels,
        attention_levels=attention,
        num_res_blocks=res_blocks,
        num_head_channels=heads,
    )
    return cfg


@BACKBONES.register("diffusion_unet")
def build_diffusion_unet(
    config: Mapping[str, Any], in_channels: int, out_channels: int
) -> DiffusionModelUNet:
    """Build a MONAI ``DiffusionModelUNet`` from a (JSON/YAML) config dict.

    Args:
        config: options, all optional, defaults in :data:`DIFFUSION_UNET_DEFAULTS`:
            ``spatial_dims`` (2; 3 for volumes), ``channels`` ((32, 64, 64)), ``attention_levels``
            (None = attention at the deepest level only), ``num_res_blocks`` (1), ``num_head_channels`` (32),
            ``norm_num_groups`` (32), ``norm_eps`` (1e-6), ``resblock_updown`` (False),
            ``use_flash_attention`` (False). A ``name`` key is ignored (used by the registry).
        in_channels: network input channels (target channels + concatenated condition channels).
        out_channels: network output channels (the target channels).

    Input spatial sizes must be divisible by ``2 ** (len(channels) - 1)``.
    """
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"diffusion_unet: {key} must be a positive int, got {value!r}")
    cfg = validate_diffusion_unet_config(config)
    return DiffusionModelUNet(in_channels=in_channels, out_channels=out_channels, **cfg)


def build_backbone(config: Mapping[str, Any], in_channels: int, out_channels: int):
    """Build the backbone named by ``config["name"]`` (default ``"diffusion_unet"``)."""
    factory = BACKBONES.get(config.get("name", "diffusion_unet"))
    return factory(config, in_channels, out_channels)


def min_input_multiple(config: Mapping[str, Any]) -> int:
    """Spatial sizes must be multiples of this (one 2x downsampling between levels)."""
    return 2 ** (len(validate_diffusion_unet_config(config)["channels"]) - 1)


__all__ = [
    "BACKBONES",
    "DIFFUSION_UNET_DEFAULTS",
    "build_backbone",
    "build_diffusion_unet",
    "min_input_multiple",
    "validate_diffusion_unet_config",
]
