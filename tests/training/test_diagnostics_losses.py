"""Loss by timestep, regional loss and worst batch, fed by a fake source's loss details."""

from __future__ import annotations

import pytest
import torch
from diagnostics_helpers import Details, FakeSource, RecordingSink
from training_tasks import mlp, regression_data

from medgen.training import TrainingConfig, train
from medgen.training.diagnostics_config import LoggingConfig
from medgen.training.loss_diagnostics import LossByTimestep, RegionalLoss, TimestepBins, WorstBatch


def config(logging=None, **changes) -> TrainingConfig:
    base = dict(max_steps=16, batch_size=4, lr=0.05, log_every=4, progress=False, device="cpu")
    return TrainingConfig(**{**base, **changes}, logging=LoggingConfig.from_params(logging or {}))


def test_timestep_bins_hold_per_bin_means_and_counts():
    bins = TimestepBins(4)
    bins.add(torch.tensor([0.0, 0.1, 0.3, 0.99, 1.0]), torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]))
    bins.add(torch.tensor([0.6]), torch.tensor([2.0]))
    means, counts = bins.pop()
    assert counts == [2, 1, 1, 2]  # 1.0 falls in the last bin
    assert means == [2.0, 5.0, 2.0, 8.0]
    assert bins.pop() == ([None] * 4, [0] * 4)


def test_bins_weighted_by_their_counts_sum_to_each_epochs_loss():
    source = FakeSource()
    sink = RecordingSink()
    callback = LossByTimestep(source, sink)
    data = regression_data(n=32)  # 8 batches of 4: two epochs in 16 steps
    result = train(mlp(), source.loss_fn, data, config(), callbacks=[callback])
    epochs = [r for r in result.history if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for record in epochs:
        counts, means = record["timestep_counts"], record["timestep_losses"]
        assert sum(counts) == 32
        weighted = sum(n * m for n, m in zip(counts, means, strict=True) if n) / sum(counts)
        assert weighted == pytest.approx(record["loss"], rel=1e-6)
    reported = {step for step, m in sink.metrics if any("timestep_loss/" in k for k in m)}
    assert sorted(reported) == [8, 16]  # each epoch's last step
    logged = {k: v for step, m in sink.metrics if step == 16 for k, v in m.items()}
    expected = {
        f"timestep_loss/bin{i}": m
        for i, m in enumerate(epochs[1]["timestep_losses"])
        if m is not None
    }
    assert logged == expected
    assert sink.figures == ["timestep_loss_heatmap"]


def test_every_n_epochs_reports_the_epochs_since_the_last_report():
    source = FakeSource()
    sink = RecordingSink()
    logging = {"timestep_losses": {"every": 2}, "regional_losses": {"enabled": False}}
    result = train(
        mlp(),
        source.loss_fn,
        regression_data(n=16),
        config(logging),
        callbacks=[LossByTimestep(source, sink)],
    )
    reported = [r for r in result.history if r["kind"] == "epoch" and "timestep_losses" in r]
    assert [r["epoch"] for r in reported] == [2, 4]
    assert [sum(r["timestep_counts"]) for r in reported] == [32, 32]  # two epochs of 16 each


def test_a_run_shorter_than_an_epoch_still_reports_at_the_end():
    source = FakeSource()
    sink = RecordingSink()
    train(
        mlp(),
        source.loss_fn,
        regression_data(n=32),
        config(max_steps=3),
        callbacks=[LossByTimestep(source, sink)],
    )
    assert {step for step, _ in sink.metrics} == {3}
    assert sink.figures == ["timestep_loss_heatmap"]


def test_a_switched_off_diagnostic_observes_nothing():
    source = FakeSource()
    sink = RecordingSink()
    logging = {"timestep_losses": {"enabled": False}, "worst_batch": {"enabled": False}}
    callbacks = [LossByTimestep(source, sink), WorstBatch(source, sink)]
    train(
        mlp(), source.loss_fn, regression_data(), config(logging, max_steps=4), callbacks=callbacks
    )
    assert source.observers == [] and sink.metrics == [] and sink.figures == []


class _Constructed:
    """A source whose details come from a constructed error map and mask."""

    def __init__(self, squared: torch.Tensor, mask: torch.Tensor):
        self.squared, self.mask, self.observers = squared, mask, []

    def add_loss_observer(self, fn):
        self.observers.append(fn)

    def display(self, x0):
        return x0

    def emit(self):
        sq, m = self.squared, self.mask.expand_as(self.squared)
        details = Details(
            per_sample=sq.flatten(1).mean(1),
            time_fraction=torch.zeros(len(sq)),
            timesteps=torch.zeros(len(sq)),
            x0=sq,
            region_sums=(sq * m).flatten(1).sum(1),
            region_counts=m.flatten(1).sum(1),
            outside_sums=(sq * (1 - m)).flatten(1).sum(1),
            outside_counts=(1 - m).flatten(1).sum(1),
        )
        with torch.enable_grad():
            for fn in self.observers:
                fn(details)


class _Trainer:
    """Just what the loss diagnostics read from a trainer."""

    def __init__(self, logging):
        self.config = config(logging)
        self.callbacks, self.checkpoint_dir, self.history, self.step, self.epoch = (
            [],
            None,
            [],
            4,
            1.0,
        )


def test_the_regional_split_of_a_constructed_mask():
    squared = torch.zeros(2, 1, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2, :2] = 1  # 4 voxels inside in sample 0, none in sample 1
    squared[0][mask[0].bool()] = 3.0
    squared[0][~mask[0].bool()] = 1.0
    squared[1] = 2.0
    source = _Constructed(squared, mask)
    sink = RecordingSink()
    callback = RegionalLoss(source, sink)
    callback.on_train_start(_Trainer({}))
    source.emit()
    source.emit()  # a second batch: pooled over the epoch
    record = {"kind": "epoch", "epoch": 1, "step": 4, "loss": 0.0}
    callback.on_epoch_end(record)
    inside = 3.0
    outside = (12 * 1.0 + 16 * 2.0) / 28  # sample 0's 12 outside voxels, sample 1's 16
    assert record["region_loss_inside"] == pytest.approx(inside)
    assert record["region_loss_outside"] == pytest.approx(outside)
    assert sink.metrics == [
        (
            4,
            {
                "region_loss/inside": pytest.approx(inside),
                "region_loss/outside": pytest.approx(outside),
                "region_loss/inside_to_outside": pytest.approx(inside / outside),
            },
        )
    ]


def test_the_worst_batch_is_the_highest_mean_loss_one_and_is_drawn_per_epoch():
    source = _Constructed(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    sink = RecordingSink()
    callback = WorstBatch(source, sink)
    callback.on_train_start(_Trainer({"worst_batch": {"images": 2}}))
    for value in (1.0, 5.0, 2.0):
        source.squared = torch.full((3, 1, 2, 2), value)
        source.emit()
    assert callback.worst["loss"] == 5.0 and callback.worst["x0"].shape[0] == 2
    callback.on_epoch_end({"kind": "epoch", "epoch": 1, "step": 4, "loss": 0.0})
    assert sink.metrics == [(4, {"worst_batch_loss": 5.0})]
    assert sink.figures == ["worst_batch_epoch_0001"]
    with torch.no_grad():  # evaluation losses are not training losses
        for fn in source.observers:
            fn(
                Details(
                    torch.full((1,), 9.0), torch.zeros(1), torch.zeros(1), torch.zeros(1, 1, 2, 2)
                )
            )
    assert callback.worst is None
