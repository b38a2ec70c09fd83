"""Validation samples and the trajectory: when they run, what they log, that training is not
touched by them."""

from __future__ import annotations

import torch
from diagnostics_helpers import FakeSource, RecordingSink
from training_tasks import NoisyDictDataset, dict_mse_loss, mlp, regression_data

from medgen.training import TrainingConfig, train
from medgen.training.diagnostics_config import LoggingConfig
from medgen.training.validation_samples import ValidationSamples


def config(logging=None, **changes) -> TrainingConfig:
    base = dict(max_steps=10, batch_size=4, lr=0.05, log_every=5, progress=False, device="cpu")
    return TrainingConfig(**{**base, **changes}, logging=LoggingConfig.from_params(logging or {}))


LOGGING = {
    "validation": {"every": 3, "samples": 2, "seed": 7},
    "intermediate_steps": {"every": 5, "frames": 4},
}


class Scorer:
    lpips_name = "lpips-alex-random-init (not comparable to published LPIPS)"

    def __init__(self):
        self.calls = []

    def __call__(self, samples, metrics):
        self.calls.append(list(metrics))
        return {"ssim": 0.5, "psnr": 20.0}


def dict_data():
    return NoisyDictDataset(regression_data())


def test_validation_and_trajectory_run_at_their_intervals_and_the_last_step():
    source, sink, scorer = FakeSource(), RecordingSink(), Scorer()
    logging = {**LOGGING, "validation": {**LOGGING["validation"], "lpips": False}}
    train(
        mlp(),
        dict_mse_loss,
        dict_data(),
        config(logging),
        callbacks=[ValidationSamples(source, scorer, sink)],
    )
    calls = [(c["n"], c["trace_frames"]) for c in source.sample_calls]
    # steps 3, 5 (trajectory only: one sample), 6, 9, 10 (both: one pass)
    assert calls == [(2, 0), (1, 4), (2, 0), (2, 0), (2, 4)]
    assert all(c["seed"] == 7 and not c["training"] for c in source.sample_calls)
    assert sink.steps_of("validation/ssim") == [3, 6, 9, 10]
    assert scorer.calls[0] == ["ssim", "psnr", "lesion_contrast", "boundary_sharpness"]
    assert sink.figures == [
        "validation_step_00000003",
        "trajectory_step_00000005",
        "validation_step_00000006",
        "validation_step_00000009",
        "validation_step_00000010",
        "trajectory_step_00000010",
    ]
    assert sink.params["validation.reference"] == "fake reference"
    assert sink.params["validation.lpips_backbone"] == Scorer.lpips_name


def test_without_anywhere_to_show_it_the_trajectory_is_not_even_sampled():
    source, sink = FakeSource(), RecordingSink(figures=False)
    logging = {"validation": {"enabled": False}, "intermediate_steps": {"every": 2}}
    train(
        mlp(),
        dict_mse_loss,
        dict_data(),
        config(logging, max_steps=4),
        callbacks=[ValidationSamples(source, None, sink)],
    )
    assert source.sample_calls == [] and sink.figures == []


def test_sampling_does_not_change_the_training_run():
    def run(callbacks):
        return train(
            mlp(), dict_mse_loss, dict_data(), config(LOGGING, ema_decay=0.9), callbacks=callbacks
        )

    plain = run([])
    watched = run([ValidationSamples(FakeSource(), Scorer(), RecordingSink())])
    for name, value in plain.model_state.items():
        assert torch.equal(value, watched.model_state[name]), name
    assert [r["loss"] for r in plain.history] == [r["loss"] for r in watched.history]
