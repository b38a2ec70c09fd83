"""The 3D U-Net inpainting baseline: its loss, its options, and training through the one
training job (trained, read back, predicted and composited)."""

from __future__ import annotations

import pytest
import torch

from medgen.datasets import TensorBundle
from medgen.inpainting.unet_baseline import (
    InpaintingCases,
    InpaintingUNet,
    UNetBaselineNetwork,
    build_unet_baseline_task,
    masked_l1,
    network_input,
    predict_unet_baseline,
    train_unet_baseline,
)
from tests.torch_threads import single_torch_thread  # noqa: F401  (autouse fixture)

NETWORK = {
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 0,
    "norm": "instance",
    "dropout": 0.0,
}
TRAINING = {
    "max_steps": 3,
    "batch_size": 2,
    "lr": 1e-3,
    "ema_decay": 0.9,
    "log_every": 1,
    "seed": 3,
    "progress": False,
    "device": "cpu",
}


def make_cases(n: int = 4, shape=(16, 16, 16), seed: int = 0) -> TensorBundle:
    """Ellipsoid "brains" with a ball mask each; score_mask is the mask minus one slab."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(
        torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    )
    centre = torch.tensor(shape, dtype=torch.float32).view(3, 1, 1, 1) / 2
    brain = (((grid - centre) / (centre * 0.9)) ** 2).sum(0) <= 1
    t1n, mask, conditioning = [], [], []
    for _ in range(n):
        tissue = torch.sin(grid[0] / 3 + torch.rand((), generator=g) * 3) * 0.4
        t1n.append(torch.where(brain, tissue, torch.tensor(-1.0)))
        at = centre.view(3) + torch.randint(-2, 3, (3,), generator=g)
        mask.append(((grid - at.view(3, 1, 1, 1)) ** 2).sum(0) <= 9)
        conditioning.append(torch.stack([(tissue > t) & brain for t in (-0.2, 0.0, 0.2, 0.3)]))
    t1n = torch.stack(t1n)[:, None]
    mask = torch.stack(mask)[:, None]
    score_mask = mask.clone()
    score_mask[..., :2] = False
    return TensorBundle(
        {
            "t1n": t1n,
            "voided": torch.where(mask, torch.tensor(-1.0), t1n),
            "mask": mask.to(torch.uint8),
            "score_mask": score_mask.to(torch.uint8),
            "brain": brain.expand_as(mask).to(torch.uint8).contiguous(),
            "conditioning": torch.stack(conditioning).float(),
        },
        {"case_ids": [f"C{i}" for i in range(n)]},
    )


def test_masked_l1_is_the_mean_over_the_mask_and_has_no_gradient_outside_it():
    pred = torch.randn(2, 1, 4, 5, 6, requires_grad=True)
    target = torch.randn(2, 1, 4, 5, 6)
    mask = torch.rand(2, 1, 4, 5, 6) < 0.3
    loss = masked_l1(pred, target, mask.to(torch.uint8))
    assert torch.allclose(loss, (pred - target).abs()[mask].mean())
    loss.backward()
    assert (pred.grad[~mask] == 0).all()
    assert (pred.grad[mask] != 0).all()


def test_masked_l1_of_an_empty_mask_is_zero_with_zero_gradient():
    pred = torch.randn(1, 1, 3, 3, 3, requires_grad=True)
    loss = masked_l1(pred, torch.zeros_like(pred), torch.zeros_like(pred))
    loss.backward()
    assert loss.item() == 0.0 and (pred.grad == 0).all()


def test_network_options_refuse_unknown_and_missing_keys_and_bad_values():
    assert UNetBaselineNetwork.from_params(NETWORK).channels == (4, 8, 16)
    with pytest.raises(ValueError, match="did you mean 'strides'"):
        UNetBaselineNetwork.from_params({**NETWORK, "stride": [2, 2]})
    with pytest.raises(ValueError, match="Missing .*'dropout'"):
        UNetBaselineNetwork.from_params({k: v for k, v in NETWORK.items() if k != "dropout"})
    with pytest.raises(ValueError, match="one stride fewer"):
        UNetBaselineNetwork.from_params({**NETWORK, "strides": [2]})
    with pytest.raises(ValueError, match="norm"):
        UNetBaselineNetwork.from_params({**NETWORK, "norm": "layer"})


def test_the_network_takes_any_volume_size():
    net = InpaintingUNet(2, UNetBaselineNetwork.from_params(NETWORK))
    assert net(torch.zeros(1, 2, 10, 13, 9)).shape == (1, 1, 10, 13, 9)


def test_items_are_input_target_and_score_mask_mirrored_together():
    cases = make_cases(n=2)
    plain = InpaintingCases(cases, use_conditioning=True)[1]
    assert plain["input"].shape == (6, 16, 16, 16)
    expected = network_input(cases["voided"][1:], cases["mask"][1:], cases["conditioning"][1:])
    assert torch.equal(plain["input"], expected[0])
    flipping = InpaintingCases(cases, use_conditioning=True, flip_axes=(0,))
    torch.manual_seed(0)
    items = [flipping[1] for _ in range(8)]
    flipped = [torch.equal(item["target"], plain["target"].flip(1)) for item in items]
    assert any(flipped) and not all(flipped)
    for item, was_flipped in zip(items, flipped, strict=True):
        view = {k: v.flip(1) for k, v in plain.items()} if was_flipped else plain
        assert all(torch.equal(item[k], view[k]) for k in plain)


def test_the_factory_builds_the_same_network_for_the_same_seed():
    data = {"cases": make_cases(n=2)}
    a = build_unet_baseline_task(data, network=NETWORK, use_conditioning=False, seed=1)
    b = build_unet_baseline_task(data, network=NETWORK, use_conditioning=False, seed=1)
    assert a.model.unet.model[0].conv.weight.shape[1] == 2  # voided + mask
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key


def test_trained_through_the_job_read_back_and_composited_exactly(tmp_path):
    cases = make_cases()
    kwargs = {"network": NETWORK, "training": TRAINING, "use_conditioning": True}
    state, report = train_unet_baseline(cases, checkpoint_dir=tmp_path / "unet", **kwargs)
    assert report["steps"] == 3 and report["weights"] == "ema" and not report["skipped"]
    assert report["in_channels"] == 6 and len(report["loss"]) == 3
    again, second = train_unet_baseline(cases, checkpoint_dir=tmp_path / "unet", **kwargs)
    assert second["skipped"] and second["steps"] == 3
    assert state.keys() == again.keys()
    assert all(torch.equal(state[k], again[k]) for k in state)

    filled = predict_unet_baseline(state, cases, network=NETWORK, use_conditioning=True)
    assert filled.shape == cases["voided"].shape and filled.dtype == torch.float32
    known = cases["mask"] == 0
    assert torch.equal(filled[known], cases["voided"][known])
    inside = filled[~known]
    assert torch.isfinite(inside).all() and inside.abs().max() <= 1.0
    assert not torch.equal(inside, cases["voided"][~known])
    one_by_one = predict_unet_baseline(
        state, cases, network=NETWORK, use_conditioning=True, batch_size=1
    )
    assert torch.allclose(one_by_one, filled, atol=1e-6)
    with pytest.raises(ValueError, match="use_conditioning"):
        predict_unet_baseline(state, cases, network=NETWORK, use_conditioning=False)


def test_bad_cases_are_refused_in_the_node(tmp_path):
    cases = make_cases(n=2)
    del cases.tensors["conditioning"]
    with pytest.raises(KeyError, match="use_conditioning: false"):
        train_unet_baseline(
            cases, network=NETWORK, training=TRAINING, use_conditioning=True, checkpoint_dir=None
        )
    cases = make_cases(n=2)
    cases.tensors["score_mask"] = cases["score_mask"][:, :, :8]
    with pytest.raises(ValueError, match="'score_mask' is"):
        train_unet_baseline(
            cases, network=NETWORK, training=TRAINING, use_conditioning=False, checkpoint_dir=None
        )
