"""Trained models round-trip through a weights-only safetensors bundle."""

from __future__ import annotations

from pathlib import Path

import torch

from medgen.datasets import TensorDataset
from medgen.diffusion import build_task
from medgen.generation import load_diffusion_model, state_from_bundle, to_model_bundle
from tests.generation.synthetic_slices import MODALITIES

TASK = {"strategy": {"name": "rflow"}, "mode": "dual", "modalities": MODALITIES}
BACKBONE = {
    "channels": [8, 16],
    "attention_levels": [False, False],
    "num_head_channels": 8,
    "norm_num_groups": 8,
}


def test_bundle_rebuilds_the_network_with_ema_or_raw_weights(tmp_path: Path):
    task = build_task(TASK)
    torch.manual_seed(0)
    model, ema = task.build_model(BACKBONE), task.build_model(BACKBONE)
    bundle = to_model_bundle(
        model.state_dict(),
        ema.state_dict(),
        task_config=TASK,
        backbone=BACKBONE,
        info={"resolution": 16},
    )
    path = tmp_path / "model.safetensors"
    TensorDataset(filepath=str(path)).save(bundle)
    loaded = TensorDataset(filepath=str(path)).load()
    assert loaded.metadata["combination"] == "rflow_dual" and loaded.metadata["resolution"] == 16

    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    for use_ema, reference in ((True, ema), (False, model)):
        rebuilt_task, rebuilt = load_diffusion_model(loaded, use_ema=use_ema)
        assert rebuilt_task.mode.target_names == ("t1_pre", "t1_gd")
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x, t), reference.eval()(x, t))


def test_without_ema_the_raw_weights_are_used():
    task = build_task(TASK)
    model = task.build_model(BACKBONE)
    bundle = to_model_bundle(model.state_dict(), None, task_config=TASK, backbone=BACKBONE)
    assert not bundle.metadata["has_ema"]
    assert state_from_bundle(bundle, use_ema=True).keys() == model.state_dict().keys()
