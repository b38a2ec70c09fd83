"""On-the-fly augmentation (paired inputs transformed identically) and overfit_batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset
from training_tasks import mlp, mse_loss, regression_data

from medgen.training import ConfigError, TrainingConfig, train
from medgen.training.augmentation import AugmentationConfig, AugmentedDataset, training_data


class Squares(Dataset):
    """Items whose image is bright exactly where the (long) mask is 1, and a latent-like map
    on a grid half as fine that marks the same square."""

    def __init__(self, n: int = 12, size: int = 16, spatial_dims: int = 2):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for _ in range(n):
            mask = torch.zeros(1, *(size,) * spatial_dims, dtype=torch.long)
            r = torch.randint(1, size // 2, (spatial_dims,), generator=g).tolist()
            r = [2 * (v // 2) for v in r]  # even corners: the square lies on the coarse grid too
            mask[(0, *[slice(v, v + 6) for v in r])] = 1
            image = torch.where(mask > 0, 0.8, -0.8).float()
            coarse = mask.float()[(slice(None), *[slice(None, None, 2)] * spatial_dims)]
            self.items.append({"images": image, "seg": mask, "latent": coarse, "label": 3})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {
            k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.items[i].items()
        }


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flips_and_rotations_move_image_mask_and_coarse_map_together(spatial_dims):
    config = AugmentationConfig(
        enabled=True,
        keys=("images", "seg", "latent"),
        mask_keys=("seg",),
        flip_prob=0.5,
        flip_axes=tuple(range(spatial_dims)),
        rotate_prob=0.5,
        rotate_degrees=12.0,
        intensity_keys=(),
    )
    base = Squares(spatial_dims=spatial_dims)
    augmented = AugmentedDataset(base, config)
    torch.manual_seed(1)
    changed = 0
    for i in range(len(base)):
        item, original = augmented[i], base[i]
        assert item["seg"].dtype == torch.long and set(item["seg"].unique().tolist()) <= {0, 1}
        assert item["label"] == 3  # not a tensor: left alone
        bright = item["images"] > 0
        inside = item["seg"] > 0
        agreement = (bright == inside).float().mean()
        assert agreement > 0.97  # only interpolated border voxels may disagree
        coarse = item["latent"][(slice(None), *[slice(None)] * spatial_dims)] > 0.5
        fine = inside[(slice(None), *[slice(None, None, 2)] * spatial_dims)]
        assert (coarse == fine).float().mean() > 0.9
        changed += not torch.equal(item["seg"], original["seg"])
    assert changed >= len(base) // 3  # the transforms were applied


def test_augmentation_is_seeded_by_the_global_rng_and_intensity_keys_alone_are_jittered():
    config = AugmentationConfig(
        enabled=True,
        keys=("images", "seg"),
        mask_keys=("seg",),
        flip_prob=0.0,
        intensity_keys=("images",),
        intensity_prob=1.0,
        shift=0.1,
    )
    augmented = AugmentedDataset(Squares(), config)
    torch.manual_seed(3)
    first = [augmented[i] for i in range(4)]
    torch.manual_seed(3)
    second = [augmented[i] for i in range(4)]
    for a, b, original in zip(first, second, Squares().items[:4], strict=True):
        assert torch.equal(a["images"], b["images"])
        assert not torch.equal(a["images"], original["images"])
        assert torch.equal(a["seg"], original["seg"])
        assert float(a["images"].max()) <= 1.0 and float(a["images"].min()) >= -1.0


def test_augmentation_names_missing_keys_and_refuses_tuple_items():
    config = AugmentationConfig(enabled=True, keys=("image",))
    with pytest.raises(ConfigError, match=r"no key\(s\) \['image'\]"):
        AugmentedDataset(Squares(), config)[0]
    with pytest.raises(ConfigError, match="needs dict items"):
        AugmentedDataset(regression_data(), AugmentationConfig(enabled=True))[0]


def test_overfit_batches_trains_on_the_same_fixed_batches_and_the_loss_falls_far():
    data = regression_data(n=64)
    config = TrainingConfig(
        max_steps=300,
        batch_size=4,
        lr=1e-2,
        max_grad_norm=None,
        log_every=10,
        progress=False,
        device="cpu",
        overfit_batches=2,
    )
    fixed = training_data(data, config, world_size=1)
    assert len(fixed) == 8 and [fixed[i][0].tolist() for i in range(8)] == [
        data[i][0].tolist() for i in range(8)
    ]
    seen = []

    def loss(model, batch):
        seen.append(batch[0].clone())
        return mse_loss(model, batch)

    result = train(mlp(hidden=32), loss, data, config)
    steps = [r["loss"] for r in result.history if r["kind"] == "step"]
    assert steps[-1] < steps[0] / 50  # eight samples, a 32-unit MLP: it fits them
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])  # in order, every epoch
    with pytest.raises(ConfigError, match="needs 80 items"):
        training_data(data, TrainingConfig(batch_size=4, overfit_batches=20), world_size=1)
