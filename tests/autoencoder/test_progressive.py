"""Progressive-resolution training (skip finished phases, resume a killed one exactly, start
from the previous phase) and the 2D autoencoder job built on it."""

from __future__ import annotations

import json

import pytest
import torch

from medgen.autoencoder.progressive import (
    parse_phases,
    phase_images,
    phase_training_config,
    train_progressive,
)
from medgen.autoencoder.training_2d import (
    build_phase_task,
    channels_as_images,
    load_autoencoder_2d,
    train_autoencoder_2d,
)
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.metrics.paired import paired_metrics
from medgen.training import Callback, load_checkpoint
from medgen.training.errors import ConfigError
from tests.torch_threads import single_torch_thread  # noqa: F401

AE = {"channels": [8, 8], "latent_channels": 2, "norm_num_groups": 8}
DISC = {"channels": 4, "num_layers_d": 1}
FACTORY_KWARGS = {
    "autoencoder": AE,
    "discriminator": DISC,
    "loss": {"adversarial_start_step": 2},
    "perceptual": {"enabled": False},
    "seed": 0,
}
TRAINING = {
    "batch_size": 4,
    "log_every": 1,
    "checkpoint_every": 1,
    "progress": False,
    "ema_decay": 0.9,
}
PHASES = [{"resolution": 8, "max_steps": 3}, {"resolution": 16, "max_steps": 4, "lr": 5e-4}]

# Set by the tests; the factory runs in this process (one worker: `launch` calls it here).
KILL: dict[str, int | str | None] = {"phase": None, "step": None}
INITIAL_STATES: dict[str, dict[str, torch.Tensor]] = {}


class SimulatedKill(Exception):
    pass


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.step:
            raise SimulatedKill(f"killed at step {trainer.step}")


def observed_phase_task(data, **kwargs):
    """The 2D job's factory, recording each phase's initial weights and killable on demand."""
    task = build_phase_task(data, **kwargs)
    INITIAL_STATES[kwargs["phase_name"]] = {
        k: v.clone() for k, v in task.model.state_dict().items()
    }
    if kwargs["phase_name"] == KILL["phase"]:
        task.callbacks = [*task.callbacks, KillAt(int(KILL["step"]))]
    return task


def images(n: int = 8, channels: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=generator) * 2 - 1
    return resize_images(coarse, (size, size)).clamp(-1, 1)  # smooth, like anatomy


def run(root, phases=PHASES):
    return train_progressive(
        images(),
        phases,
        TRAINING,
        root,
        name="autoencoder_2d",
        factory=observed_phase_task,
        options=FACTORY_KWARGS,
    )


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_a_killed_run_resumed_equals_an_uninterrupted_run_and_skips_finished_phases(tmp_path):
    straight = run(tmp_path / "straight")
    assert [o.name for o in straight.phases] == ["phase_0_8", "phase_1_16"]
    assert [o.steps for o in straight.phases] == [3, 4]
    # Phase 1 starts from phase 0's final raw weights.
    phase_0_final = load_checkpoint(tmp_path / "straight" / "phase_0_8" / "latest.pt")["model"]
    assert_states_equal(INITIAL_STATES["phase_1_16"], phase_0_final)

    KILL.update(phase="phase_1_16", step=3)
    try:
        with pytest.raises(SimulatedKill):
            run(tmp_path / "killed")
    finally:
        KILL.update(phase=None, step=None)
    assert load_checkpoint(tmp_path / "killed" / "phase_0_8" / "latest.pt")["step"] == 3
    assert load_checkpoint(tmp_path / "killed" / "phase_1_16" / "latest.pt")["step"] == 2

    INITIAL_STATES.clear()
    resumed = run(tmp_path / "killed")
    assert "phase_0_8" not in INITIAL_STATES  # finished: not trained again
    assert [o.skipped for o in resumed.phases] == [True, False]
    assert resumed.phases[1].resumed_from_step == 2
    assert_states_equal(resumed.model_state, straight.model_state)
    assert_states_equal(resumed.ema_state, straight.ema_state)
    for a, b in zip(resumed.phases, straight.phases, strict=True):
        assert a.history == b.history


def test_a_changed_phase_retrains_from_there_and_keeps_earlier_phases(tmp_path):
    run(tmp_path)
    longer = [PHASES[0], {**PHASES[1], "max_steps": 5}]
    INITIAL_STATES.clear()
    result = run(tmp_path, longer)
    assert [o.skipped for o in result.phases] == [True, False]
    assert result.phases[1].resumed_from_step == 0 and result.phases[1].steps == 5
    assert (tmp_path / "phase_1_16.stale" / "latest.pt").is_file()
    assert list(INITIAL_STATES) == ["phase_1_16"]


def test_phase_images_are_antialiased_resizes_clamped_to_the_image_range():
    x = images(4, size=16) * 1.2
    expected = resize_images(x, (8, 8)).clamp(-1, 1)
    assert torch.equal(phase_images(x, [8, 8]), expected)
    assert torch.equal(phase_images(x, [16, 16]), x)


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ([], "non-empty list"),
        ([{"resolution": 8}], r"needs \['max_steps'\]"),
        ([{"resolution": 8, "max_steps": 2, "batchsize": 4}], "did you mean 'batch_size'"),
        ([{"resolution": 2, "max_steps": 2}], "integers >= 4"),
        ([{"resolution": 8, "max_steps": 0}], "max_steps=0"),
    ],
)
def test_bad_phases_are_refused(phases, message):
    with pytest.raises(ConfigError, match=message):
        for phase in parse_phases(phases):
            phase_training_config(TRAINING, phase)


def test_training_max_steps_is_refused_because_phases_set_it():
    with pytest.raises(ConfigError, match="each phase sets max_steps"):
        phase_training_config({"max_steps": 10}, parse_phases(PHASES)[0])


def job_params(**changes):
    params = {
        "autoencoder": AE,
        "discriminator": DISC,
        "loss": {"adversarial_start_step": 1},
        "perceptual": {"enabled": False},
        "training": {"batch_size": 4, "progress": False, "ema_decay": 0.9, "log_every": 1},
        "phases": [{"resolution": 8, "max_steps": 2}, {"resolution": 16, "max_steps": 2}],
        "validation": {"max_slices": 2},
    }
    return {**params, **changes}


def slices(n: int, seed: int) -> TensorBundle:
    return TensorBundle(
        {"images": images(n, channels=2, seed=seed)}, {"modalities": ["t1_pre", "bravo"]}
    )


def test_the_2d_job_trains_single_channel_and_reports_validation_metrics(tmp_path):
    weights, report = train_autoencoder_2d(slices(4, 0), slices(3, 1), job_params(), tmp_path)
    assert weights.metadata["in_channels"] == 1 and weights.metadata["weights"] == "ema"
    assert report["train_images"] == 8  # 4 slices x 2 channels
    assert [p["resolution"] for p in report["phases"]] == [[8, 8], [16, 16]]
    assert {"loss", "l1", "discriminator"} <= set(report["phases"][1]["final"])

    autoencoder = load_autoencoder_2d(weights)
    val = slices(3, 1)["images"][[0, 2]]  # max_slices 2: evenly spaced slices 0 and 2
    with torch.no_grad():
        recon = autoencoder.decode(autoencoder.encode(channels_as_images(val))).clamp(-1, 1)
    expected = paired_metrics(recon, channels_as_images(val), data_range=2.0)
    validation = report["validation"]
    assert validation["n_slices"] == 2
    assert validation["overall"]["psnr"] == pytest.approx(expected["psnr"], rel=1e-5)
    assert validation["overall"]["ssim"] == pytest.approx(expected["ssim"], rel=1e-5)
    bravo = paired_metrics(recon.reshape(2, 2, 16, 16)[:, 1:], val[:, 1:], data_range=2.0)
    assert validation["per_modality"]["bravo"]["mae"] == pytest.approx(bravo["mae"], rel=1e-5)
    assert validation["lpips"] is None and "lpips_skipped" in validation
    json.dumps(report)  # the report is plain JSON

    # A re-run finds both phases finished and returns the same weights.
    again, report_again = train_autoencoder_2d(slices(4, 0), slices(3, 1), job_params(), tmp_path)
    assert [p["skipped"] for p in report_again["phases"]] == [True, True]
    assert_states_equal(again.tensors, weights.tensors)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"phases": [{"resolution": 9, "max_steps": 1}]},
            "not a multiple of the autoencoder's downsample factor 2",
        ),
        ({"discriminator": {"num_layers_d": 3}}, "too small for the discriminator"),
        ({"perceptual": {"pretrained_backbone": False}}, "below LPIPS-alex's minimum of 31"),
        ({"autoencodr": AE}, "did you mean 'autoencoder'"),
        ({"training": {"max_steps": 3}}, "each phase sets max_steps"),
    ],
)
def test_the_2d_job_refuses_bad_parameters_before_training(tmp_path, changes, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        train_autoencoder_2d(slices(4, 0), slices(3, 1), job_params(**changes), tmp_path)
    assert not any(tmp_path.iterdir())
