"""Dice against MONAI's DiceMetric; a tiny MONAI UNet segmenter; conditioning fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from medgen.metrics.fidelity import (
    LesionBalancedSlices,
    conditioning_fidelity,
    dice_score,
    other_group_partners,
    segment,
    train_segmenter,
)


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
    model, history = train_segmenter(images[:64], masks[:64], epochs=30, batch_size=16, seed=0)
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


def _one_lesion_in(n: int, lesion_every: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose value is their index; a one-pixel lesion in every ``lesion_every``-th."""
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    masks = torch.zeros(n, 1, 4, 4)
    masks[::lesion_every, 0, 1, 0] = 1
    return images, masks


@pytest.mark.parametrize(
    ("n", "lesion_every", "fraction", "repeats"),
    [(40, 10, 0.5, 9), (40, 4, 0.5, 3), (40, 2, 0.5, 1), (40, 10, 0.2, 2), (40, 1, 0.5, 1)],
)
def test_lesion_slices_are_repeated_to_the_requested_share(n, lesion_every, fraction, repeats):
    images, masks = _one_lesion_in(n, lesion_every)
    data = LesionBalancedSlices(images, masks, lesion_fraction=fraction, flip=False)
    n_lesion = len(range(0, n, lesion_every))
    assert data.repeats == repeats and len(data) == n + (repeats - 1) * n_lesion
    seen = [int(data[i]["image"][0, 0, 0]) for i in range(len(data))]
    assert sorted(set(seen)) == list(range(n))  # every slice at least once
    assert all(seen.count(j) == (repeats if j % lesion_every == 0 else 1) for j in range(n))


def test_flip_mirrors_image_and_mask_together():
    images = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    masks = torch.zeros(1, 1, 4, 4)
    masks[0, 0, 2, 0] = 1
    data = LesionBalancedSlices(images, masks, flip=True)
    torch.manual_seed(0)
    items = [data[0] for _ in range(20)]
    flipped = [it for it in items if not torch.equal(it["image"], images[0])]
    assert 0 < len(flipped) < 20
    for it in flipped:
        assert torch.equal(it["image"], images[0].flip(-1)) and it["mask"][0, 2, 3] == 1


def test_segmenter_inputs_are_checked():
    images, masks = _one_lesion_in(8, 2)
    with pytest.raises(ValueError, match="none of the 8 training masks"):
        LesionBalancedSlices(images, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="lesion_fraction must be in"):
        LesionBalancedSlices(images, masks, lesion_fraction=1.0)
    with pytest.raises(ValueError, match="do not match"):
        train_segmenter(images, masks[:4])
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        train_segmenter(images, masks, epochs=0)


def test_oversampling_rare_lesions_is_what_makes_the_segmenter_find_them(slices):
    """8 lesion slices among 34, the same 96 optimizer steps with and without repeats."""
    images, masks = slices
    lesion = masks.flatten(1).any(dim=1)
    keep = torch.cat([torch.nonzero(lesion).flatten()[:8], torch.nonzero(~lesion).flatten()[:26]])
    test_lesion = torch.nonzero(lesion).flatten()[8:]
    dice = {}
    # 0.5: lesion slices x3 -> 50 items, 6 steps/epoch x 16; 0.2 (~ their natural share,
    # no repeats): 34 items, 4 steps/epoch x 24
    for fraction, epochs in ((0.5, 16), (0.2, 24)):
        model, _ = train_segmenter(
            images[keep], masks[keep], epochs=epochs, batch_size=8, lesion_fraction=fraction, seed=0
        )
        predicted = segment(model, images[test_lesion])
        dice[fraction] = float(np.nanmean(dice_score(predicted, masks[test_lesion]).numpy()))
    assert dice[0.5] > dice[0.2] + 0.2, dice


def test_partners_come_from_another_group_and_are_seeded():
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    partners = other_group_partners(groups, seed=1)
    assert partners.shape == (9,) and bool((groups[partners] != groups).all())
    assert torch.equal(partners, other_group_partners(groups.numpy(), seed=1))
    with pytest.raises(ValueError, match="at least 2 groups.*got 1"):
        other_group_partners([5, 5, 5])


class _Threshold(torch.nn.Module):
    """A "segmenter" that marks bright pixels: its Dice can be worked out by hand."""

    def forward(self, x):
        return (x - 0.5) * 100


def test_chance_dice_scores_segmentations_against_other_patients_masks():
    masks = torch.zeros(4, 1, 4, 4)
    masks[0, 0, 0, :2] = masks[1, 0, 0, :2] = 1  # patient 0: top-left
    masks[2, 0, 3, 2:] = masks[3, 0, 3, 2:] = 1  # patient 1: bottom-right
    images = masks * 2 - 1  # the lesion is exactly the bright part
    groups = torch.tensor([0, 0, 1, 1])
    result = conditioning_fidelity(_Threshold(), images, masks, images, masks, real_groups=groups)
    assert result.floor == result.value == 1.0
    assert result.details["chance_dice"] == 0.0  # other patient's lesion never overlaps
    single = conditioning_fidelity(
        _Threshold(), images, masks, images, masks, real_groups=torch.zeros(4)
    )
    assert (
        single.details["chance_dice"] is None
        and "single patient" in single.details["chance_meaning"]
    )
