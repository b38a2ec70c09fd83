from __future__ import annotations

import pytest
import torch
from training_tasks import mse_loss, regression_data

from medgen.training import ConfigError, TrainingConfig, lr_range_test, plot_lr_range_test


def test_lr_range_test_suggests_a_stable_lr_and_leaves_the_model_alone(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    config = TrainingConfig(batch_size=32, max_grad_norm=None, device="cpu", progress=False)

    result = lr_range_test(
        model, mse_loss, regression_data(64), config, min_lr=1e-4, max_lr=100.0, num_steps=80
    )

    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(torch.get_rng_state(), rng_before)
    # Exponential sweep: constant ratio between consecutive lrs, starting at min_lr.
    assert result.lrs[0] == pytest.approx(1e-4)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert ratios == pytest.approx([(100.0 / 1e-4) ** (1 / 79)] * len(ratios))
    # Adam at lr ~10-100 on linear regression blows up: the sweep stops early.
    assert result.diverged_lr is not None and len(result.lrs) < 80
    assert 1e-4 <= result.suggested_lr < result.diverged_lr
    best = result.lrs[result.losses.index(min(result.losses[10:]))]  # skip_start=10
    assert result.suggested_lr == pytest.approx(best / 10)
    assert min(result.losses) < result.losses[0]  # the loss really went down
    assert min(result.raw_losses) < result.raw_losses[0] / 2

    png = plot_lr_range_test(result, tmp_path / "lr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_range_test_rejects_bad_bounds():
    config = TrainingConfig(device="cpu")
    with pytest.raises(ConfigError, match="min_lr < max_lr"):
        lr_range_test(
            torch.nn.Linear(6, 1), mse_loss, regression_data(8), config, min_lr=1.0, max_lr=0.1
        )
