"""AutoencoderGAN: exact separation of the adversarial gradients, the adversarial start step
(with accumulation and across resume), per-network learning rates and logged components."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgen.autoencoder.gan import (
    COMPONENTS,
    AutoencoderGAN,
    GANComponentsLogger,
    build_autoencoder_gan,
    build_patch_discriminator,
    channel_difference_l1,
    gan_loss,
    patch_discriminator_output_size,
)
from medgen.autoencoder.kl import build_kl_autoencoder
from medgen.autoencoder.losses import adversarial_loss
from medgen.autoencoder.progressive import ImageDataset
from medgen.training import Callback, TrainingConfig, train
from medgen.training.errors import ConfigError
from medgen.training.setup import build_optimizer
from tests.torch_threads import single_torch_thread  # noqa: F401

AE = {"channels": [8, 8], "latent_channels": 2, "norm_num_groups": 8}
DISC = {"channels": 8, "num_layers_d": 2}


def make_gan(spatial_dims: int = 2, start: int = 0, **kwargs) -> AutoencoderGAN:
    torch.manual_seed(0)
    ae = build_kl_autoencoder(AE, in_channels=1, spatial_dims=spatial_dims)
    return build_autoencoder_gan(
        ae,
        discriminator=DISC,
        loss={"adversarial_start_step": start, "adversarial": 0.1},
        perceptual={"enabled": False},
        **kwargs,
    )


def batch(n: int = 4, size=(16, 16), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grads(loss: torch.Tensor, params) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


@pytest.mark.parametrize(("spatial_dims", "size"), [(2, (16, 16)), (3, (16, 16, 16))])
def test_adversarial_gradients_are_separated_exactly(spatial_dims, size):
    gan = make_gan(spatial_dims)
    out = gan(batch(size=size))
    assert set(out) == {"loss", *COMPONENTS}
    ae_params = list(gan.autoencoder.parameters())
    d_params = list(gan.discriminator.parameters())
    # The generator's adversarial term reaches the autoencoder, never the discriminator.
    assert all(g is None for g in grads(out["generator_adversarial"], d_params))
    assert any(
        g is not None and g.abs().sum() > 0 for g in grads(out["generator_adversarial"], ae_params)
    )
    # The discriminator term reaches the discriminator, never the autoencoder.
    assert all(g is None for g in grads(out["discriminator"], ae_params))
    # In the total, the discriminator's gradient is exactly that of its weighted term, and
    # the autoencoder's that of the generator terms.
    w = gan.weights
    for total, part in zip(
        grads(out["loss"], d_params),
        grads(w.adversarial * out["discriminator"], d_params),
        strict=True,
    ):
        torch.testing.assert_close(total, part, rtol=0, atol=0)
    generator = (
        w.l1 * out["l1"]
        + w.kl * out["regularisation"]
        + w.adversarial * out["generator_adversarial"]
    )
    for total, part in zip(grads(out["loss"], ae_params), grads(generator, ae_params), strict=True):
        torch.testing.assert_close(total, part, rtol=1e-6, atol=1e-9)


def test_loss_values_equal_an_independent_computation():
    gan = make_gan()
    x = batch()
    torch.manual_seed(3)
    out = gan(x)
    torch.manual_seed(3)
    recon, kl = gan.autoencoder.reconstruct(x)
    torch.testing.assert_close(out["l1"], F.l1_loss(recon, x))
    torch.testing.assert_close(out["regularisation"], kl)
    adv = adversarial_loss()
    # The discriminator's BatchNorm running statistics do not change its train-mode output.
    d = gan.discriminator
    torch.testing.assert_close(out["generator_adversarial"], adv(d(recon)[-1], True, False))
    expected_d = 0.5 * (adv(d(x)[-1], True, True) + adv(d(recon)[-1], False, True))
    torch.testing.assert_close(out["discriminator"], expected_d)
    w = gan.weights
    total = (
        w.l1 * out["l1"]
        + w.kl * kl
        + w.adversarial * (out["generator_adversarial"] + out["discriminator"])
    )
    torch.testing.assert_close(out["loss"], total)


def test_adversarial_terms_start_after_the_configured_optimizer_steps():
    gan = make_gan(start=2, micro_batches_per_step=2)
    active = []
    for _ in range(6):  # 6 micro-batches = 3 optimizer steps
        active.append(gan.adversarial_active)
        out = gan(batch())
        if not active[-1]:
            assert out["generator_adversarial"] == 0 and out["discriminator"] == 0
            d_grads = grads(out["loss"], list(gan.discriminator.parameters()))
            # Tied in with weight 0 (DDP needs them in the graph): zero, not None.
            assert all(g is not None and torch.all(g == 0) for g in d_grads)
        else:
            assert out["discriminator"] > 0
    assert active == [False] * 4 + [True] * 2
    assert int(gan.step_count) == 6 and gan.optimizer_steps == 3
    gan.eval()
    gan(batch())
    assert int(gan.step_count) == 6  # evaluation forwards do not count


def test_the_discriminator_gets_its_own_learning_rate_and_the_schedule_scales_both():
    gan = make_gan()
    config = TrainingConfig(lr=1e-3, warmup_steps=2, max_steps=4, progress=False)
    optimizer = build_optimizer(gan, config, config.lr)
    names = [g["name"] for g in optimizer.param_groups]
    assert names == ["autoencoder", "discriminator"]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 5e-3]
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in gan.parameters() if p.requires_grad}

    from medgen.training.schedule import build_warmup_cosine_scheduler

    scheduler = build_warmup_cosine_scheduler(optimizer, 2, 4)
    first = [g["lr"] for g in optimizer.param_groups]
    assert first == pytest.approx([0.5e-3, 2.5e-3])  # warmup multiplier 1/2 on both groups
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 5e-3])


def test_the_engine_refuses_param_groups_that_miss_a_parameter():
    class Partial(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

        def optimizer_param_groups(self, lr):
            return [{"params": list(self.a.parameters()), "lr": lr}]

    with pytest.raises(ConfigError, match=r"missing \['b.weight', 'b.bias'\]"):
        build_optimizer(Partial(), TrainingConfig(), 1e-3)


def test_without_a_discriminator_the_adversarial_terms_are_zero():
    torch.manual_seed(0)
    gan = build_autoencoder_gan(
        build_kl_autoencoder(AE, in_channels=1),
        discriminator={"enabled": False},
        perceptual={"enabled": False},
    )
    out = gan(batch())
    assert gan.discriminator is None and not gan.adversarial_active
    assert out["generator_adversarial"] == 0 and out["discriminator"] == 0
    assert [g["name"] for g in gan.optimizer_param_groups(1e-3)] == ["autoencoder"]


@pytest.mark.parametrize(
    ("spatial_dims", "size", "layers"), [(2, 16, 2), (2, 24, 3), (2, 64, 3), (3, 16, 2), (2, 20, 1)]
)
def test_patch_discriminator_output_size_matches_the_network(spatial_dims, size, layers):
    config = {"channels": 4, "num_layers_d": layers}
    disc = build_patch_discriminator(spatial_dims, 1, config)
    out = disc(torch.zeros(2, 1, *(size,) * spatial_dims))[-1]
    assert out.shape[2:] == (patch_discriminator_output_size(size, config),) * spatial_dims


def test_inputs_too_small_for_the_discriminator_are_refused_clearly():
    gan = make_gan()
    with pytest.raises(
        ValueError, match="too small for the patch discriminator with num_layers_d=2"
    ):
        gan(batch(size=(8, 8)))
    with pytest.raises(ValueError, match="norm='LAYER'"):
        build_patch_discriminator(2, 1, {"norm": "LAYER"})
    with pytest.raises(ValueError, match="adversarial_start_step=-1"):
        build_autoencoder_gan(
            build_kl_autoencoder(AE, 1),
            loss={"adversarial_start_step": -1},
            perceptual={"enabled": False},
        )
    with pytest.raises(TypeError, match="LatentAutoencoder"):
        AutoencoderGAN(torch.nn.Linear(2, 2))


class SimulatedKill(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.step:
            raise SimulatedKill(f"simulated kill at step {trainer.step}")


def test_components_are_logged_and_the_step_counter_survives_exact_resume(tmp_path):
    data = ImageDataset(batch(n=16, seed=1))
    config = TrainingConfig(
        max_steps=6, batch_size=4, accum_steps=2, log_every=2, checkpoint_every=1, progress=False
    )

    def run(directory, callbacks=()):
        gan = make_gan(start=3, micro_batches_per_step=2)
        result = train(
            gan,
            gan_loss,
            data,
            config,
            checkpoint_dir=directory,
            callbacks=[GANComponentsLogger(), *callbacks],
        )
        return gan, result

    gan, result = run(tmp_path / "straight")
    with pytest.raises(SimulatedKill):
        run(tmp_path / "killed", [CrashAt(5)])
    resumed, resumed_result = run(tmp_path / "killed")
    assert int(gan.step_count) == int(resumed.step_count) == 12
    for key, value in gan.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert resumed_result.history == result.history
    steps = [r for r in result.history if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 6]
    assert all(set(COMPONENTS) <= set(r) for r in steps)
    # Steps 1-2 are before the adversarial start (3), 5-6 after it.
    assert steps[0]["discriminator"] == 0 and steps[2]["discriminator"] > 0


def test_channel_difference_term_equals_an_independent_computation():
    torch.manual_seed(0)
    ae = build_kl_autoencoder(AE, in_channels=3, spatial_dims=2)
    loss = {"channel_difference": 2.0, "difference_pairs": [[1, 0], [2, 0]], "adversarial": 0.0}
    gan = build_autoencoder_gan(ae, discriminator=DISC, loss=loss, perceptual={"enabled": False})
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(3)
    out = gan(x)
    torch.manual_seed(3)
    recon, kl = gan.autoencoder.reconstruct(x)
    # numpy, channel by channel: mean |(r_a - r_b) - (x_a - x_b)| summed over the two pairs
    r, t = recon.detach().numpy(), x.numpy()
    expected = sum(
        abs((r[:, a] - r[:, b]) - (t[:, a] - t[:, b])).mean() for a, b in ((1, 0), (2, 0))
    )
    assert out["channel_difference"].item() == pytest.approx(float(expected), rel=1e-5)
    discriminator_tie = 0.0  # adversarial weight 0: the tie term is exactly 0
    total = out["l1"] + 1e-6 * kl + 2.0 * out["channel_difference"] + discriminator_tie
    torch.testing.assert_close(out["loss"], total)
    # it sees only differences: an offset common to all channels costs nothing, a change of
    # one channel's contrast does
    assert channel_difference_l1(x + 0.3, x, ((1, 0), (2, 0))).item() == pytest.approx(0, abs=1e-6)
    brighter = x.clone()
    brighter[:, 1] += 0.3
    assert channel_difference_l1(brighter, x, ((1, 0),)).item() == pytest.approx(0.3, rel=1e-5)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"channel_difference": 1.0}, "needs difference_pairs"),
        ({"difference_pairs": [[1, 1]]}, "two different channel indices"),
        ({"difference_pairs": [[0]]}, "two different channel indices"),
        ({"channel_difference": -1.0, "difference_pairs": [[1, 0]]}, "must be a number >= 0"),
    ],
)
def test_bad_channel_difference_settings_are_refused(loss, message):
    with pytest.raises(ValueError, match=message):
        build_autoencoder_gan(
            build_kl_autoencoder(AE, in_channels=2, spatial_dims=2),
            loss=loss,
            perceptual={"enabled": False},
        )


def test_a_difference_pair_beyond_the_input_channels_is_refused():
    with pytest.raises(ValueError, match="has 2 input channels"):
        build_autoencoder_gan(
            build_kl_autoencoder(AE, in_channels=2, spatial_dims=2),
            loss={"channel_difference": 1.0, "difference_pairs": [[2, 0]]},
            perceptual={"enabled": False},
        )
