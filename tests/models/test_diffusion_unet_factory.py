from __future__ import annotations

import json

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from medgen.models import (
    BACKBONES,
    DIFFUSION_UNET_DEFAULTS,
    Registry,
    build_backbone,
    build_diffusion_unet,
    min_input_multiple,
)

TINY = {
    "channels": [8, 16],
    "attention_levels": [False, True],
    "num_head_channels": 8,
    "norm_num_groups": 8,
}


@pytest.mark.parametrize(
    "spatial_dims, in_ch, out_ch, spatial",
    [(2, 2, 1, (16, 16)), (2, 3, 2, (8, 16)), (3, 2, 1, (8, 8, 8))],
)
def test_builds_monai_unet_with_requested_channels(spatial_dims, in_ch, out_ch, spatial):
    net = build_diffusion_unet({**TINY, "spatial_dims": spatial_dims}, in_ch, out_ch)
    assert isinstance(net, DiffusionModelUNet)
    out = net(torch.randn(2, in_ch, *spatial), torch.tensor([0, 999]))
    assert out.shape == (2, out_ch, *spatial)


def test_defaults_and_json_config():
    # YAML/JSON gives lists, and a registry "name" key may be present.
    config = json.loads(json.dumps({"name": "diffusion_unet", **TINY, "num_res_blocks": [1, 2]}))
    net = build_diffusion_unet(config, 1, 1)
    assert net.block_out_channels == (8, 16)
    assert net.num_res_blocks == (1, 2)
    assert net.attention_levels == (False, True)
    default = build_diffusion_unet({}, 1, 1)
    assert default.block_out_channels == DIFFUSION_UNET_DEFAULTS["channels"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"channels": [8, 12], "norm_num_groups": 8}, "divisible by norm_num_groups=8"),
        (
            {"channels": [8, 16], "norm_num_groups": 8, "attention_levels": [False]},
            "attention_levels needs one entry per level",
        ),
        (
            {"channels": [8, 16], "norm_num_groups": 8, "num_res_blocks": [1, 1, 1]},
            "num_res_blocks",
        ),
        (
            {
                "channels": [8, 24],
                "norm_num_groups": 8,
                "attention_levels": [False, False],
                "num_head_channels": 16,
            },
            "middle block",
        ),
        (
            {
                "channels": [8, 16],
                "norm_num_groups": 8,
                "attention_levels": [True, False],
                "num_head_channels": [16, 8],
            },
            r"channels\[0\]=8 at the attention level",
        ),
        ({"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
        ({"channels": []}, "non-empty"),
        ({"channels": [8, -8], "norm_num_groups": 8}, "positive integers"),
        ({"chanels": [8, 16]}, r"unknown option\(s\) \['chanels'\]"),
    ],
)
def test_invalid_configs_name_the_problem(config, message):
    with pytest.raises(ValueError, match=message):
        build_diffusion_unet(config, 1, 1)


@pytest.mark.parametrize("in_ch, out_ch", [(0, 1), (1, 0)])
def test_invalid_channel_counts(in_ch, out_ch):
    with pytest.raises(ValueError, match="must be a positive int"):
        build_diffusion_unet(TINY, in_ch, out_ch)


def test_min_input_multiple():
    assert min_input_multiple(TINY) == 2
    assert min_input_multiple({}) == 4  # default 3 levels


def test_registry_adds_a_backbone_with_one_function():
    registry = Registry("backbone")

    @registry.register("Linear_Probe")
    def build_probe(config, in_channels, out_channels):
        return torch.nn.Conv2d(in_channels, out_channels, config.get("kernel", 1))

    assert "linear_probe" in registry and registry.names() == ["linear_probe"]
    assert registry.get("LINEAR_PROBE") is build_probe
    with pytest.raises(ValueError, match="already registered"):
        registry.register("linear_probe")(build_probe)
    with pytest.raises(KeyError, match=r"unknown backbone 'nope'; registered: \['linear_probe'\]"):
        registry.get("nope")


def test_build_backbone_dispatches_on_name():
    assert "diffusion_unet" in BACKBONES
    net = build_backbone({"name": "diffusion_unet", **TINY}, 3, 2)
    assert isinstance(net, DiffusionModelUNet) and net.in_channels == 3 and net.out_channels == 2
    with pytest.raises(KeyError, match="unknown backbone"):
        build_backbone({"name": "no_such_net"}, 1, 1)
