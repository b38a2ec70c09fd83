"""Dice against MONAI's DiceMetric; a tiny MONAI UNet segmenter; conditioning fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from medgen.metrics.fidelity import conditioning_fidelity, dice_score, segment, train_segmenter


def test_dice_matches_monai_dice_metric_including_empty_targets():
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(6, 1, 16, 16, generator=g) > 0.6).float()
    target = (torch.rand(6, 1, 16, 16, generator=g) > 0.5).float()
    target[2] = 0  # empty target: undefined Dice
    pred[3] = target[3]
    ours = dice_score(pred, target)
    monai = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(
        pred, target
    ).flatten()
    np.testing.assert_allclose(ours.numpy(), monai.double().numpy(), rtol=1e-6)
    assert torch.isnan(ours[2]) and ours[3] == 1.0


def test_segmenter_learns_lesions_and_fidelity_of_real_images_equals_floor(slices):
    images, masks = slices
    model, history = train_segmenter(images[:64], masks[:64], epochs=20, batch_size=16, seed=0)
    assert history[-1] < history[0]
    predicted = segment(model, images[64:])
    assert predicted.shape == masks[64:].shape and set(predicted.unique().tolist()) <= {0.0, 1.0}
    assert float(np.nanmean(dice_score(predicted, masks[64:]).numpy())) > 0.7
    result = conditioning_fidelity(model, images[64:], masks[64:], images[64:], masks[64:])
    assert result.value == pytest.approx(result.floor)
    assert result.details["n_real_empty_masks"] == int((masks[64:].flatten(1).sum(1) == 0).sum())
    shuffled = conditioning_fidelity(
        model, images[64:], masks[64:].roll(1, dims=0), images[64:], masks[64:]
    )
    assert shuffled.value < result.floor
