"""The lesion-contrast check: own masks vs shuffled masks vs real."""

import numpy as np
import torch

from medgen.generation.lesion_contrast import lesion_contrast_report, lesion_contrasts


def images_with_bright_squares(n: int = 4, size: int = 32, value: float = 0.6):
    images = torch.zeros(n, 1, size, size)  # "brain" everywhere (0 > -0.8)
    masks = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(n):
        r = 2 + 6 * i  # far enough apart that no ring reaches another square
        masks[i, 0, r : r + 2, 4:6] = 1
        images[i, 0, r : r + 2, 4:6] = value
    return images, masks


def test_contrast_is_the_in_mask_minus_ring_difference():
    images, masks = images_with_bright_squares(value=0.6)
    np.testing.assert_allclose(lesion_contrasts(images, masks), [0.6] * 4, atol=1e-6)
    # background (-1) around the mask is not brain and is left out of the ring
    images[:, :, :, 6:] = -1.0
    np.testing.assert_allclose(lesion_contrasts(images, masks), [0.6] * 4, atol=1e-6)


def test_a_model_that_follows_its_masks_beats_the_shuffled_control():
    images, masks = images_with_bright_squares()
    report = lesion_contrast_report(images, masks, images, masks)
    assert report["generated_own_masks"]["mean"] == report["real"]["mean"] == 0.6
    # with another sample's mask, the square lies elsewhere: the region is plain tissue,
    # and its ring holds no bright pixel either -> contrast 0
    assert report["generated_shuffled_masks"]["mean"] == 0.0
    assert report["generated_shuffled_masks"]["n"] == 4


def test_images_without_usable_masks_are_skipped():
    images = torch.zeros(2, 1, 8, 8)
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    masks[1, 0, 3, 3] = 1  # a single pixel: too small
    assert len(lesion_contrasts(images, masks)) == 0
    report = lesion_contrast_report(images, masks, images, masks)
    assert report["real"] == {"n": 0, "mean": None, "median": None}
