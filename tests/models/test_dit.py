"""DiT: position embedding, patchify, adaLN-Zero initialisation, class embedding, factory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medgen.models import BACKBONES, build_backbone
from medgen.models.dit import (
    DiT,
    build_dit,
    patchify,
    sincos_position_embedding,
    unpatchify,
)

TINY = {"hidden_size": 24, "depth": 2, "num_heads": 2, "frequency_embedding_size": 16}


# --- an independent numpy port of MAE's pos_embed.py (He et al. 2022), which DiT uses ----------
def _1d_sincos(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _mae_2d(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    grid = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_h, grid_w)
    emb_h = _1d_sincos(embed_dim // 2, grid[0])  # MAE's naming: grid[0] holds the w coordinate
    emb_w = _1d_sincos(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def _per_axis_3d(embed_dim: int, size: tuple[int, int, int]) -> np.ndarray:
    coords = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in size], indexing="ij")
    third = embed_dim // 3
    blocks = [_1d_sincos(third, coords[axis]) for axis in (1, 0, 2)]  # documented order
    return np.concatenate(blocks, axis=1)


@pytest.mark.parametrize("grid_h, grid_w, dim", [(4, 4, 16), (3, 5, 24)])
def test_2d_position_embedding_equals_mae(grid_h, grid_w, dim):
    ours = sincos_position_embedding((grid_h, grid_w), dim).numpy()
    np.testing.assert_allclose(ours, _mae_2d(dim, grid_h, grid_w), atol=1e-6)


def test_3d_position_embedding_per_axis_formula_and_errors():
    ours = sincos_position_embedding((3, 4, 2), 24).numpy()
    np.testing.assert_allclose(ours, _per_axis_3d(24, (3, 4, 2)), atol=1e-6)
    assert len({tuple(row) for row in ours.round(6)}) == 24  # every token distinct
    with pytest.raises(ValueError, match="divisible by 6"):
        sincos_position_embedding((2, 2, 2), 16)


@pytest.mark.parametrize(
    "shape, patch", [((2, 3, 8, 6), (2, 2)), ((2, 2, 4, 6, 8), (2, 3, 4)), ((1, 1, 4, 4), (1, 1))]
)
def test_patchify_unpatchify_round_trip(shape, patch):
    x = torch.randn(shape)
    grid = [s // p for s, p in zip(shape[2:], patch, strict=True)]
    tokens = patchify(x, patch)
    assert tokens.shape == (shape[0], int(np.prod(grid)), int(np.prod(patch)) * shape[1])
    assert torch.equal(unpatchify(tokens, grid, patch, shape[1]), x)
    # token 0 is the first patch; its values are ordered (patch offsets, channel)
    p = patch
    first = x[0, :, : p[0], : p[1]] if len(p) == 2 else x[0, :, : p[0], : p[1], : p[2]]
    assert torch.equal(tokens[0, 0], first.permute(*range(1, len(p) + 1), 0).reshape(-1))


def test_patch_embedding_is_a_linear_map_of_patchified_tokens():
    torch.manual_seed(0)
    net = DiT(3, 2, 2, (4, 6, 4), patch_size=2, **TINY)
    x = torch.randn(1, 2, 4, 6, 4)
    conv_tokens = net.patch_embed(x).flatten(2).transpose(1, 2)
    # conv weight [D, C, p, p, p] → (p, p, p, C) layout of patchify
    weight = net.patch_embed.weight.permute(0, 2, 3, 4, 1).reshape(24, -1)
    torch.testing.assert_close(
        conv_tokens, patchify(x, (2, 2, 2)) @ weight.T + net.patch_embed.bias
    )


def _randomise_zero_layers(net: DiT) -> None:
    g = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, nn.Linear) and module.weight.abs().sum() == 0:
            module.weight.data = torch.randn(module.weight.shape, generator=g) * 0.1
            module.bias.data = torch.randn(module.bias.shape, generator=g) * 0.1


@pytest.mark.parametrize(
    "spatial_dims, size, classes", [(2, (8, 8), 0), (2, (6, 10), 3), (3, (4, 6, 4), 2)]
)
def test_adaln_zero_initial_output_is_exactly_zero(spatial_dims, size, classes):
    torch.manual_seed(0)
    net = DiT(spatial_dims, 3, 2, size, patch_size=2, num_classes=classes, **TINY)
    x = torch.randn(2, 3, *size)
    labels = torch.tensor([0, -1]) if classes else None
    out = net(x, torch.tensor([3, 700]), labels)
    assert out.shape == (2, 2, *size) and torch.equal(out, torch.zeros_like(out))
    # gradients still reach the zero-initialised output layer
    (net(x, torch.tensor([3, 700]), labels) - x[:, :2]).pow(2).mean().backward()
    assert net.final_layer.linear.weight.grad.abs().sum() > 0


def test_non_divisible_size_is_padded_and_cropped():
    torch.manual_seed(0)
    net = DiT(3, 1, 1, (6, 7, 5), patch_size=2, **TINY)
    assert net.grid_size == (3, 4, 3) and net.pos_embed.shape == (1, 36, 24)
    _randomise_zero_layers(net)
    x = torch.randn(2, 1, 6, 7, 5)
    out = net(x, torch.tensor([1, 2]))
    assert out.shape == x.shape
    # equal to running a network built for the padded size on the zero-padded input
    padded = DiT(3, 1, 1, (6, 8, 6), patch_size=2, **TINY)
    padded.load_state_dict(net.state_dict())
    big = padded(torch.nn.functional.pad(x, (0, 1, 0, 1)), torch.tensor([1, 2]))
    torch.testing.assert_close(out, big[:, :, :6, :7, :5])


def test_class_labels_and_null_class():
    torch.manual_seed(0)
    net = DiT(2, 1, 1, (8, 8), patch_size=2, num_classes=2, **TINY)
    _randomise_zero_layers(net)
    x, t = torch.randn(1, 1, 8, 8).repeat(3, 1, 1, 1), torch.full((3,), 10)
    out = net(x, t, torch.tensor([0, 1, -1]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[2])
    # -1 is the extra embedding row; None means "all null"
    torch.testing.assert_close(net(x, t, None), out[2:].repeat(3, 1, 1, 1))
    assert net.y_embedder.num_embeddings == 3
    with pytest.raises(ValueError, match=r"must be in \[0, 2\) or -1 \(null\), got \[2\]"):
        net(x, t, torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="integers of shape"):
        net(x, t, torch.tensor([0.0, 1.0, 1.0]))
    unconditional = DiT(2, 1, 1, (8, 8), patch_size=2, **TINY)
    with pytest.raises(ValueError, match="num_classes=0"):
        unconditional(x, t, torch.tensor([0, 1, 0]))


def test_input_errors():
    net = DiT(2, 2, 2, (8, 8), **TINY)
    with pytest.raises(ValueError, match=r"differs from input_size \(8, 8\)"):
        net(torch.zeros(1, 2, 8, 6), torch.zeros(1))
    with pytest.raises(ValueError, match=r"expected input \[B, 2"):
        net(torch.zeros(1, 3, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DiT(2, 1, 1, 8, hidden_size=24, num_heads=5)
    with pytest.raises(ValueError, match="divisible by 6"):
        DiT(3, 1, 1, 8, hidden_size=16, num_heads=2)
    with pytest.raises(ValueError, match="patch_size"):
        DiT(3, 1, 1, 8, patch_size=(2, 2), **TINY)


def test_factory_registry_and_learn_sigma():
    assert "dit" in BACKBONES
    net = build_backbone({"name": "dit", "spatial_dims": 2, "input_size": [8, 8], **TINY}, 3, 2)
    assert isinstance(net, DiT) and (net.in_channels, net.out_channels) == (3, 2)
    assert DiT(2, 1, 1, 8, learn_sigma=True, **TINY).out_channels == 2
    with pytest.raises(ValueError, match="input_size is required"):
        build_dit({"spatial_dims": 2}, 1, 1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['depht'\]"):
        build_dit({"input_size": 8, "depht": 2}, 1, 1)
    with pytest.raises(ValueError, match="learn_sigma"):
        build_dit({"input_size": 8, "learn_sigma": True}, 1, 1)


def test_pos_embed_is_fixed_and_not_saved():
    net = DiT(2, 1, 1, (4, 4), patch_size=2, **TINY)
    assert "pos_embed" not in net.state_dict()
    assert all(p is not net.pos_embed for p in net.parameters())
