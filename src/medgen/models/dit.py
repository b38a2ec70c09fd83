"""A class-conditional Diffusion Transformer (DiT), generic over ``spatial_dims`` like MONAI's nets.

Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (https://arxiv.org/abs/2212.09748),
in 3D as in BiFlowNet / 3D MedDiffusion (Wang et al. 2024): the (latent) image is cut into
``patch_size`` patches by a strided convolution, a fixed sin-cos position embedding is added, and
``depth`` transformer blocks are modulated by the timestep + class embedding through adaLN-Zero
(every residual branch and the output layer start at exactly zero, so the untrained network
outputs 0). MONAI lacks this network; its blocks are used where they exist: ``SABlock`` (self
attention, optionally through torch's ``scaled_dot_product_attention``), ``MLPBlock``, the
sin-cos position embedding and the sinusoidal timestep embedding.

Class labels are integers in ``[0, num_classes)``; ``-1`` is the *null class* of classifier-free
guidance (its own learned embedding row), see :mod:`medgen.diffusion.guidance`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock, SABlock
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

from medgen.models.diffusion_unet import BACKBONES

#: Label meaning "no class" (classifier-free guidance's unconditional branch).
NULL_CLASS = -1

#: Defaults of :func:`build_dit`; ``input_size`` has none (the task fills it from the data).
DIT_DEFAULTS: dict[str, Any] = {
    "spatial_dims": 3,
    "patch_size": 2,
    "hidden_size": 144,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "num_classes": 0,
    "learn_sigma": False,
    "frequency_embedding_size": 256,
    "use_flash_attention": True,
}


def _per_axis(name: str, value: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    values = (value,) * spatial_dims if isinstance(value, int) else tuple(value)
    if len(values) != spatial_dims or any(
        not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values
    ):
        raise ValueError(
            f"DiT: {name} must be a positive int or {spatial_dims} positive ints, got {value!r}"
        )
    return values


def sincos_position_embedding(grid: Sequence[int], embed_dim: int) -> torch.Tensor:
    """Fixed sin-cos embedding ``[prod(grid), embed_dim]`` of a 2D/3D token grid (row-major order).

    MONAI's ``build_sincos_position_embedding``; in 2D it is exactly MAE's / DiT's
    ``get_2d_sincos_pos_embed`` (He et al. 2022): per axis ``[sin(p·ω), cos(p·ω)]`` with
    ``ω_k = 10000^(−k/K)``, ``K = embed_dim / (2·spatial_dims)``, the channel blocks ordered by
    axis 1, axis 0 (, axis 2). ``embed_dim`` must be divisible by ``2·spatial_dims``.
    """
    grid = [int(g) for g in grid]
    if embed_dim % (2 * len(grid)):
        raise ValueError(
            f"DiT: hidden_size={embed_dim} must be divisible by {2 * len(grid)} for the "
            f"{len(grid)}D sin-cos position embedding"
        )
    with warnings.catch_warnings():
        # MONAI calls torch.meshgrid without indexing=; its default "ij" is the row-major order
        # wanted here, so the deprecation warning says nothing about this use.
        warnings.filterwarnings("ignore", message=".*meshgrid.*", category=UserWarning)
        return build_sincos_position_embedding(grid, embed_dim, len(grid)).data[0]


def patchify(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """``[B, C, *spatial]`` → tokens ``[B, N, prod(patch) · C]``, N patches in row-major order and
    each token's values ordered (patch offsets, channel) as in DiT. Inverse of :func:`unpatchify`."""
    b, c, *spatial = x.shape
    d = len(spatial)
    grid = [s // p for s, p in zip(spatial, patch, strict=True)]
    x = x.reshape(b, c, *[v for g, p in zip(grid, patch, strict=True) for v in (g, p)])
    # [B, C, g0, p0, g1, p1, ...] → [B, g0, g1, ..., p0, p1, ..., C]
    order = [0, *range(2, 2 + 2 * d, 2), *range(3, 3 + 2 * d, 2), 1]
    return x.permute(order).reshape(b, math.prod(grid), math.prod(patch) * c)


def unpatchify(
    tokens: torch.Tensor, grid: Sequence[int], patch: Sequence[int], channels: int
) -> torch.Tensor:
    """Tokens ``[B, prod(grid), prod(patch) · channels]`` → ``[B, channels, *(grid · patch)]``."""
    b, d = tokens.shape[0], len(grid)
    x = tokens.reshape(b, *grid, *patch, channels)
    # [B, g0, g1, ..., p0, p1, ..., C] → [B, C, g0, p0, g1, p1, ...]
    order = [0, 1 + 2 * d] + [v for i in range(d) for v in (1 + i, 1 + d + i)]
    return x.permute(order).reshape(b, channels, *[g * p for g, p in zip(grid, patch, strict=True)])


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x · (1 + scale) + shift`` with per-sample ``shift``/``scale`` ``[B, D]``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features (MONAI ``get_timestep_embedding``, DiT's [cos, sin] layout)
    followed by an MLP to ``hidden_size``."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        features = get_timestep_embedding(timesteps, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: shift, scale and gate of both branches regressed from
    the conditioning vector; the regression starts at zero so the block starts as the identity."""

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float, use_flash_attention: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SABlock(
            hidden_size, num_heads, qkv_bias=True, use_flash_attention=use_flash_attention
        )
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        # DiT uses tanh-approximated GELU.
        self.mlp = MLPBlock(
            hidden_size, int(hidden_size * mlp_ratio), act=("GELU", {"approximate": "tanh"})
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from a token to its patch values."""

    def __init__(self, hidden_size: int, patch_numel: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_numel * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Diffusion Transformer over 2D or 3D inputs of a fixed size.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (noisy sample, plus any concatenated spatial condition).
        out_channels: predicted channels (doubled when ``learn_sigma``).
        input_size: spatial size of the inputs, an int or one per axis. A size not divisible by
            ``patch_size`` is zero-padded at the end of that axis inside ``forward`` and the
            output cropped back, so any size works (the padding costs extra tokens).
        patch_size: patch edge, int or per axis (default 2).
        hidden_size: token width (default 144); divisible by ``num_heads`` and by
            ``2 * spatial_dims`` (sin-cos position embedding).
        depth: number of transformer blocks (default 4).
        num_heads: attention heads (default 4).
        mlp_ratio: MLP width / hidden_size (default 4.0).
        num_classes: number of classes; 0 (default) = no class embedding. With classes, the
            embedding table has one more row for the null label -1.
        learn_sigma: also output a variance channel per output channel (Nichol & Dhariwal 2021;
            default False; medgen's strategies predict the mean only).
        frequency_embedding_size: sinusoidal timestep feature size (default 256).
        use_flash_attention: attention through ``torch.nn.functional.scaled_dot_product_attention``
            (default True; False uses MONAI's explicit softmax attention).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        input_size: int | Sequence[int],
        patch_size: int | Sequence[int] = 2,
        hidden_size: int = 144,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 0,
        learn_sigma: bool = False,
        frequency_embedding_size: int = 256,
        use_flash_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"DiT: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("hidden_size", hidden_size),
            ("depth", depth),
            ("num_heads", num_heads),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DiT: {name} must be a positive int, got {value!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"DiT: num_classes must be an int >= 0, got {num_classes!r}")
        if hidden_size % num_heads:
            raise ValueError(
                f"DiT: hidden_size={hidden_size} must be divisible by num_heads={num_heads}"
            )
        if mlp_ratio <= 0:
            raise ValueError(f"DiT: mlp_ratio must be > 0, got {mlp_ratio!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels * 2 if learn_sigma else out_channels
        self.input_size = _per_axis("input_size", input_size, spatial_dims)
        self.patch_size = _per_axis("patch_size", patch_size, spatial_dims)
        self.grid_size = tuple(
            -(-s // p) for s, p in zip(self.input_size, self.patch_size, strict=True)
        )
        self.num_classes = num_classes
        self.learn_sigma = bool(learn_sigma)

        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.patch_embed = conv(
            in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size
        )
        # Fixed, derived from the config: a buffer, not saved in the state dict.
        self.register_buffer(
            "pos_embed",
            sincos_position_embedding(self.grid_size, hidden_size).unsqueeze(0),
            persistent=False,
        )
        self.t_embedder = TimestepEmbedder(hidden_size, frequency_embedding_size)
        self.y_embedder = nn.Embedding(num_classes + 1, hidden_size) if num_classes else None
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, use_flash_attention) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier linears, N(0, 0.02) embeddings, zero adaLN and output."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # The patch embedding is a linear map of a flattened patch.
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero = [b.adaLN_modulation[-1] for b in self.blocks]
        zero += [self.final_layer.adaLN_modulation[-1], self.final_layer.linear]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def embed_labels(self, class_labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Class embedding ``[B, hidden]``; label -1 (or ``class_labels=None``) is the null row."""
        if self.y_embedder is None:
            if class_labels is not None:
                raise ValueError("DiT: class_labels given but the network has num_classes=0")
            return None
        if class_labels is None:
            class_labels = torch.full((batch,), NULL_CLASS, device=self.pos_embed.device)
        if class_labels.shape != (batch,) or class_labels.is_floating_point():
            raise ValueError(
                f"DiT: class_labels must be integers of shape [{batch}], got "
                f"{tuple(class_labels.shape)} {class_labels.dtype}"
            )
        bad = (class_labels < NULL_CLASS) | (class_labels >= self.num_classes)
        if bad.any():
            raise ValueError(
                f"DiT: class labels must be in [0, {self.num_classes}) or {NULL_CLASS} (null), got "
                f"{sorted(set(class_labels[bad].tolist()))}"
            )
        index = torch.where(class_labels == NULL_CLASS, self.num_classes, class_labels)
        return self.y_embedder(index.long())

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``[B, in_channels, *input_size]``, ``timesteps`` ``[B]`` (or a scalar) and optional
        ``class_labels`` ``[B]`` → ``[B, out_channels, *input_size]``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DiT: expected input [B, {self.in_channels}, *{list(self.input_size)}], got "
                f"{tuple(x.shape)}"
            )
        if tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"DiT: input spatial size {tuple(x.shape[2:])} differs from input_size "
                f"{self.input_size} the position embedding was built for"
            )
        batch = x.shape[0]
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        padded = [g * p for g, p in zip(self.grid_size, self.patch_size, strict=True)]
        pad = [n - s for n, s in zip(padded, self.input_size, strict=True)]
        if any(pad):
            # F.pad lists the last axis first, (before, after) per axis.
            x = F.pad(x, [v for p in reversed(pad) for v in (0, p)])
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        c = self.t_embedder(timesteps)
        y = self.embed_labels(class_labels, batch)
        if y is not None:
            c = c + y
        for block in self.blocks:
            tokens = block(tokens, c)
        out = unpatchify(
            self.final_layer(tokens, c), self.grid_size, self.patch_size, self.out_channels
        )
        if any(pad):
            out = out[(slice(None), slice(None), *(slice(0, s) for s in self.input_size))]
        return out


def validate_dit_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Full keyword set of :class:`DiT` (defaults filled in) from a config; ``name`` is ignored.

    Raises:
        ValueError: for unknown keys (listing the allowed ones), a missing ``input_size`` or
            ``learn_sigma: true`` (medgen's strategies train no variance output).
    """
    config = {k: v for k, v in config.items() if k != "name"}
    allowed = {*DIT_DEFAULTS, "input_size"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"dit: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    if config.get("input_size") is None:
        raise ValueError("dit: input_size is required (the spatial size the network is trained on)")
    cfg = {**DIT_DEFAULTS, **config}
    if cfg["learn_sigma"]:
        raise ValueError(
            "dit: learn_sigma=true adds variance outputs that no medgen strategy trains; set it "
            "to false"
        )
    return cfg


@BACKBONES.register("dit")
def build_dit(config: Mapping[str, Any], in_channels: int, out_channels: int) -> DiT:
    """Build a :class:`DiT` from a (JSON/YAML) config dict.

    Args:
        config: ``input_size`` (required) and any :class:`DiT` option, defaults in
            :data:`DIT_DEFAULTS` (``spatial_dims`` 3, ``patch_size`` 2, ``hidden_size`` 144,
            ``depth`` 4, ``num_heads`` 4, ``mlp_ratio`` 4.0, ``num_classes`` 0, ...). A ``name``
            key is ignored (used by the registry).
        in_channels: network input channels.
        out_channels: network output channels.
    """
    return DiT(in_channels=in_channels, out_channels=out_channels, **validate_dit_config(config))


__all__ = [
    "DIT_DEFAULTS",
    "NULL_CLASS",
    "DiT",
    "DiTBlock",
    "FinalLayer",
    "TimestepEmbedder",
    "build_dit",
    "modulate",
    "patchify",
    "sincos_position_embedding",
    "unpatchify",
    "validate_dit_config",
]
