from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from training_tasks import NoisyDictDataset, dict_mse_loss, mlp, mse_loss, regression_data

from medgen.training import (
    Callback,
    CheckpointError,
    NonFiniteLossError,
    TrainingConfig,
    load_checkpoint,
    train,
)

BASE = TrainingConfig(
    max_steps=6,
    batch_size=4,
    lr=0.05,
    max_grad_norm=None,
    log_every=1,
    progress=False,
    device="cpu",
)


def test_accumulating_two_batches_of_4_equals_one_batch_of_8():
    data = regression_data(32)
    clipped = replace(BASE, max_grad_norm=0.3, weight_decay=0.01)  # clipping sees the sum
    acc = train(mlp(), mse_loss, data, replace(clipped, batch_size=4, accum_steps=2))
    big = train(mlp(), mse_loss, data, replace(clipped, batch_size=8, accum_steps=1))
    for key, value in big.model_state.items():
        torch.testing.assert_close(acc.model_state[key], value, rtol=0, atol=1e-6)
    assert acc.epochs == big.epochs == 6 * 8 / 32
    # Sanity: the runs actually moved the weights.
    assert not torch.equal(big.model_state["0.weight"], mlp().state_dict()["0.weight"])


class RecordWeights(Callback):
    def __init__(self):
        self.weights = []

    def on_step_end(self, trainer):
        self.weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def test_ema_follows_the_hand_computed_average():
    decay = 0.7
    recorder = RecordWeights()
    result = train(
        mlp(), mse_loss, regression_data(32), replace(BASE, ema_decay=decay), callbacks=[recorder]
    )
    # torch's AveragedModel copies the first trained weights, then averages.
    for key in result.ema_state:
        expected = recorder.weights[0][key]
        for weights in recorder.weights[1:]:
            expected = decay * expected + (1 - decay) * weights[key]
        torch.testing.assert_close(result.ema_state[key], expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(result.model_state["0.weight"], recorder.weights[-1]["0.weight"])


def scripted_val(values):
    calls = iter(values)
    return lambda net: {"score": next(calls), "other": 0.0}


@pytest.mark.parametrize(
    ("mode", "values", "stop_step", "best"),
    [
        ("min", [1.0, 0.5, 0.6, 0.7, 0.1, 0.1], 8, 0.5),  # two validations w/o improvement
        ("max", [0.1, 0.3, 0.3, 0.9, 0.2, 0.2, 0.0], 12, 0.9),  # equal is no improvement
    ],
)
def test_early_stopping_and_best_checkpoint(tmp_path, mode, values, stop_step, best):
    config = replace(
        BASE,
        max_steps=40,
        val_every=2,
        early_stopping_metric="score",
        early_stopping_mode=mode,
        early_stopping_patience=2,
    )
    result = train(
        mlp(),
        mse_loss,
        regression_data(32),
        config,
        val_fn=scripted_val(values),
        checkpoint_dir=tmp_path,
    )
    assert result.stopped_early and result.steps == stop_step
    assert result.best_metric == best
    best_step = 2 * (values.index(best) + 1)
    assert load_checkpoint(tmp_path / "best.pt")["step"] == best_step
    latest = load_checkpoint(tmp_path / "latest.pt")
    assert latest["step"] == stop_step and latest["stopped_early"]
    vals = [r for r in result.history if r["kind"] == "val"]
    assert [r["score"] for r in vals] == values[: stop_step // 2]
    # Resuming a run that already stopped early does not train further.
    again = train(
        mlp(),
        mse_loss,
        regression_data(32),
        config,
        val_fn=scripted_val([]),
        checkpoint_dir=tmp_path,
    )
    assert again.steps == stop_step
    assert torch.equal(again.model_state["0.weight"], result.model_state["0.weight"])


def test_missing_early_stopping_metric_is_an_error():
    config = replace(BASE, val_every=2, early_stopping_metric="fid")
    with pytest.raises(Exception, match="'fid' is not among the validation metrics"):
        train(mlp(), mse_loss, regression_data(32), config, val_fn=lambda net: {"mse": 1.0})


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = mse_loss(model, batch)
        return loss * float("nan") if calls["n"] == 5 else loss  # step 5 (accum 1)

    config = replace(BASE, max_steps=10, checkpoint_every=2, ema_decay=0.9)
    with pytest.raises(NonFiniteLossError) as info:
        train(mlp(), loss_fn, regression_data(32), config, checkpoint_dir=tmp_path)
    error = info.value
    assert error.step == 5 and math.isnan(error.loss)
    assert error.checkpoint_path == tmp_path / "latest.pt"
    assert "step 5" in str(error) and str(tmp_path / "latest.pt") in str(error)
    state = load_checkpoint(error.checkpoint_path)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    # The good checkpoint resumes; with a healthy loss the run completes.
    resumed = train(mlp(), mse_loss, regression_data(32), config, checkpoint_dir=tmp_path)
    assert resumed.steps == 10


def test_nan_without_checkpoint_dir_says_so():
    def loss_fn(model, batch):
        return mse_loss(model, batch) / 0.0 * 0.0

    with pytest.raises(NonFiniteLossError, match="step 1.*no checkpoint was written"):
        train(mlp(), loss_fn, regression_data(32), BASE)


def test_checkpoint_contents_and_kept_copies(tmp_path):
    config = replace(BASE, max_steps=7, checkpoint_every=3, keep_every=2, ema_decay=0.9)
    result = train(
        mlp(), dict_mse_loss, NoisyDictDataset(regression_data(32)), config, checkpoint_dir=tmp_path
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["latest.pt", "step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]
    state = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert state["step"] == 7 and state["config"] == config.to_dict()
    for key in (
        "model",
        "ema",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "data",
        "best_metric",
        "bad_validations",
        "history",
    ):
        assert key in state
    assert state["data"]["micro_batches"] == 7
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    for key, value in result.model_state.items():
        assert torch.equal(state["model"][key], value)
    assert load_checkpoint(tmp_path / "step_00000004.pt")["step"] == 4
    assert result.latest_checkpoint == tmp_path / "latest.pt"


def test_resume_false_starts_over_and_ema_mismatch_is_refused(tmp_path):
    config = replace(BASE, max_steps=3, ema_decay=0.9)
    first = train(mlp(), mse_loss, regression_data(32), config, checkpoint_dir=tmp_path)
    again = train(
        mlp(), mse_loss, regression_data(32), config, checkpoint_dir=tmp_path, resume=False
    )
    assert again.steps == 3
    assert torch.equal(first.model_state["0.weight"], again.model_state["0.weight"])
    with pytest.raises(CheckpointError, match="ema_decay"):
        train(
            mlp(),
            mse_loss,
            regression_data(32),
            replace(config, ema_decay=None),
            checkpoint_dir=tmp_path,
        )


def test_epoch_records_average_the_steps_of_each_epoch():
    config = replace(BASE, max_steps=8, log_every=4)  # 32 samples / 4 = 8 steps per epoch
    result = train(mlp(), mse_loss, regression_data(32), config)
    steps = [r for r in result.history if r["kind"] == "step"]
    epochs = [r for r in result.history if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [4, 8]
    assert epochs == [
        {
            "kind": "epoch",
            "step": 8,
            "epoch": 1,
            "loss": pytest.approx((steps[0]["loss"] + steps[1]["loss"]) / 2),
        }
    ]


def test_cpu_autocast_only_when_allowed():
    seen = []

    def loss_fn(model, batch):
        x, y = batch
        out = model(x)
        seen.append(out.dtype)
        return torch.nn.functional.mse_loss(out.float(), y)

    bf16 = replace(BASE, max_steps=2, precision="bf16")
    train(mlp(), loss_fn, regression_data(32), bf16)
    assert seen == [torch.float32, torch.float32]  # CPU: bf16 ignored by default
    seen.clear()
    result = train(mlp(), loss_fn, regression_data(32), replace(bf16, allow_cpu_autocast=True))
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert result.model_state["0.weight"].dtype == torch.float32  # weights stay fp32
