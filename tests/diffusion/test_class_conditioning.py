"""Class-label conditioning: null label, dropout, guidance, the ``class`` mode, a tiny DiT."""

from __future__ import annotations

import json

import pytest
import torch
from diffusion_helpers import MODALITIES, CountingModel

from medgen.diffusion import (
    STRATEGIES,
    ClassConditionalMode,
    DiffusionTask,
    RectifiedFlowStrategy,
    build_mode,
    build_strategy,
    build_task,
    drop_condition,
    is_class_labels,
    null_condition,
)
from medgen.diffusion.guidance import guided_model, model_forward
from medgen.models.dit import DiT

TINY_DIT = {
    "name": "dit",
    "spatial_dims": 2,
    "input_size": [8, 8],
    "patch_size": 2,
    "hidden_size": 32,
    "depth": 2,
    "num_heads": 2,
    "frequency_embedding_size": 32,
}


class LabelEcho(torch.nn.Module):
    """Output = 2 x + 3 (label + 1): affine in the label, 0 added for the null label -1."""

    def forward(self, x, timesteps, class_labels=None):
        return 2 * x + 3 * (class_labels.float() + 1).view(-1, *[1] * (x.ndim - 1))


class RecordingLabelModel(CountingModel):
    def forward(self, x, timesteps, class_labels=None):
        self.calls.append({"x": x.clone(), "labels": class_labels.clone()})
        return self.model(x, timesteps, class_labels=class_labels)


def test_labels_are_told_apart_from_spatial_conditions():
    assert is_class_labels(torch.tensor([0, 1]))
    assert not is_class_labels(torch.tensor([True, False]))  # no -1 in bool
    assert not is_class_labels(torch.zeros(2, 1, 4, 4))
    assert not is_class_labels(torch.tensor([0.0, 1.0]))
    labels = torch.tensor([0, 1, 1])
    assert torch.equal(null_condition(labels), torch.full((3,), -1))


def test_label_dropout_is_seeded_per_sample_at_the_expected_rate():
    labels = torch.randint(0, 2, (20000,), generator=torch.Generator().manual_seed(0))
    assert drop_condition(labels, 0.0) is labels
    assert torch.equal(drop_condition(labels, 1.0), torch.full_like(labels, -1))
    dropped = drop_condition(labels, 0.1, torch.Generator().manual_seed(5))
    # independent computation of the same draws: sample i dropped iff u_i < p
    u = torch.rand(20000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(dropped, torch.where(u < 0.1, -1, labels))
    rate = (dropped == -1).float().mean().item()
    assert abs(rate - 0.1) < 0.01


@pytest.mark.parametrize("scale", [1.0, 2.0, 4.5])
def test_guided_model_with_labels_is_one_batched_call(scale):
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 1])
    model = RecordingLabelModel(LabelEcho())
    out = guided_model(model, labels, scale)(x, torch.full((3,), 7))
    cond_out = 2 * x + 3 * (labels.float() + 1).view(3, 1, 1, 1)
    uncond_out = 2 * x
    torch.testing.assert_close(out, uncond_out + scale * (cond_out - uncond_out))
    assert len(model.calls) == 1
    seen = model.calls[0]
    if scale == 1.0:
        assert torch.equal(seen["labels"], labels) and seen["x"].shape == (3, 1, 4, 4)
    else:
        assert torch.equal(seen["labels"], torch.tensor([0, 1, 1, -1, -1, -1]))
        assert torch.equal(seen["x"], torch.cat([x, x]))


@pytest.mark.parametrize("strategy_cls", [STRATEGIES.get(name) for name in STRATEGIES])
@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_training_passes_labels_as_keyword_not_channels(strategy_cls, prob):
    model = RecordingLabelModel(LabelEcho())
    labels = torch.tensor([1, 0, 1, 1])
    strategy_cls(cond_drop_prob=prob).training_loss(
        model, torch.zeros(4, 2, 4, 4), labels, torch.Generator().manual_seed(0)
    )
    seen = model.calls[0]
    assert seen["x"].shape == (4, 2, 4, 4)  # nothing concatenated
    assert torch.equal(seen["labels"], labels if prob == 0.0 else torch.full((4,), -1))


def test_strategies_check_label_shapes():
    strategy, model = RectifiedFlowStrategy(), LabelEcho()
    with pytest.raises(ValueError, match="3 class labels for a batch of 2"):
        strategy.training_loss(model, torch.zeros(2, 1, 4, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="must be integer class labels"):
        strategy.sample(model, (2, 1, 4, 4), torch.tensor([0.0, 1.0]), num_steps=1)
    out = model_forward(model, torch.ones(1, 1, 2, 2), torch.zeros(1), torch.tensor([1]))
    assert torch.equal(out, torch.full((1, 1, 2, 2), 8.0))


def _batch(n: int = 4, size: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.rand(n, 4, size, size, generator=g) * 2 - 1,
        "lesion_present": torch.tensor([0, 1] * (n // 2)),
    }


def test_class_mode_targets_labels_and_errors():
    mode = build_mode("class", MODALITIES, {"label_key": "lesion_present"})
    batch = _batch()
    x0, cond = mode.prepare(batch)
    assert torch.equal(x0, batch["images"]) and cond.dtype == torch.int64
    assert torch.equal(cond, batch["lesion_present"])
    assert (mode.target_channels, mode.condition_channels, mode.num_classes) == (4, 0, 2)
    sub = ClassConditionalMode(MODALITIES, targets=["flair", "t1_pre"], label_key="lesion_present")
    assert torch.equal(sub.target(batch), batch["images"][:, [2, 0]])
    assert torch.equal(
        mode.condition({"lesion_present": torch.tensor([[True], [False]])}), torch.tensor([1, 0])
    )
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\), got \[2\]"):
        mode.condition({"lesion_present": torch.tensor([0, 2])})
    with pytest.raises(ValueError, match="must be integers of shape"):
        mode.condition({"lesion_present": torch.tensor([0.0, 1.0])})
    with pytest.raises(KeyError, match=r"needs batch\['lesion_present'\]"):
        mode.condition({"images": batch["images"]})
    with pytest.raises(ValueError, match=r"needs modality \['t2'\]"):
        ClassConditionalMode(MODALITIES, targets=["t2"])
    with pytest.raises(ValueError, match="2 class_names"):
        ClassConditionalMode(MODALITIES, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['label'\]"):
        build_mode("class", MODALITIES, {"label": "x"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_classes'\]"):
        build_mode("bravo", MODALITIES, {"num_classes": 2})


def test_class_task_config_round_trip_and_backbone_classes():
    task = DiffusionTask(
        RectifiedFlowStrategy(cond_drop_prob=0.1),
        ClassConditionalMode(MODALITIES, targets=["bravo"], num_classes=3),
    )
    config = json.loads(json.dumps(task.to_config()))
    assert config["mode_options"]["num_classes"] == 3
    rebuilt = build_task(config)
    assert rebuilt.to_config() == config and isinstance(rebuilt.mode, ClassConditionalMode)
    assert (task.in_channels, task.out_channels) == (1, 1)
    model = task.build_model(TINY_DIT)
    assert isinstance(model, DiT) and model.num_classes == 3
    with pytest.raises(ValueError, match="backbone num_classes=2 but mode 'class' has 3"):
        task.build_model({**TINY_DIT, "num_classes": 2})
    # modes without options keep their configs unchanged
    assert (
        "mode_options"
        not in DiffusionTask(RectifiedFlowStrategy(), build_mode("seg", [])).to_config()
    )


def test_generate_with_labels_checks_them():
    task = DiffusionTask(RectifiedFlowStrategy(), ClassConditionalMode(["bravo"]))
    model = task.build_model(TINY_DIT)
    out = task.generate(model, cond=torch.tensor([0, 1, -1]), spatial_shape=(8, 8), num_steps=1)
    assert out.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="pass cond"):
        task.generate(model, n=2, spatial_shape=(8, 8))
    with pytest.raises(ValueError, match=r"must lie in \[-1, 2\)"):
        task.generate(model, cond=torch.tensor([0, 5]), spatial_shape=(8, 8))
    with pytest.raises(ValueError, match="needs n and spatial_shape"):
        task.generate(model, cond=torch.tensor([0, 1]))


#: Options of the tiny class-conditional problem, per strategy (default: 10 solver steps).
TINY_PROBLEM_OPTIONS = {
    # v-prediction: an epsilon-predicting net needs several times more steps on this toy
    "ddpm": {"num_inference_steps": 10, "prediction_type": "v_prediction"},
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_tiny_dit_learns_class_dependent_means(name):
    """Class 0 is -0.5 everywhere, class 1 is +0.5: samples must follow their label."""
    options = TINY_PROBLEM_OPTIONS.get(name, {"num_inference_steps": 10})
    torch.manual_seed(0)
    task = DiffusionTask(
        build_strategy(name, {**options, "cond_drop_prob": 0.1}),
        ClassConditionalMode(["bravo"], label_key="lesion_present"),
    )
    model = task.build_model(TINY_DIT)
    labels = torch.tensor([0, 1] * 8)
    batch = {
        "images": (labels.float() - 0.5).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous(),
        "lesion_present": labels,
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        loss = task.loss(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    samples = task.generate(
        model,
        cond=torch.tensor([0] * 4 + [1] * 4),
        spatial_shape=(8, 8),
        guidance_scale=2.0,
        generator=torch.Generator().manual_seed(1),
    )
    means = samples.flatten(1).mean(1)
    assert (means[:4] < -0.25).all() and (means[4:] > 0.25).all(), means
