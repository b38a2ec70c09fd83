"""The diagnostics every job gets: gradient norm, throughput, parameters and FLOPs, at their
intervals; and where figures go without an MLflow run."""

from __future__ import annotations

import copy

import pytest
import torch
from diagnostics_helpers import RecordingSink
from torch import nn
from training_tasks import mlp, mse_loss, regression_data

from medgen.training import TrainingConfig, train
from medgen.training.diagnostics import DiagnosticsSink, ModelCost, StepScalars
from medgen.training.diagnostics_config import LoggingConfig
from medgen.training.flops import FirstForwardFlops, forward_flops, parameter_count


def config(**changes) -> TrainingConfig:
    base = dict(max_steps=10, batch_size=4, lr=0.05, log_every=5, progress=False, device="cpu")
    return TrainingConfig(**{**base, **changes})


@pytest.mark.parametrize(("n_in", "n_out", "batch"), [(6, 16, 4), (32, 3, 1)])
def test_the_flops_of_a_linear_layer_are_two_per_multiply_add(n_in, n_out, batch):
    layer = nn.Linear(n_in, n_out)
    x = torch.randn(batch, n_in)
    assert forward_flops(lambda: layer(x)) == 2 * n_in * n_out * batch
    counter = FirstForwardFlops(layer)
    counter.install()
    layer(x)
    assert counter.per_sample == 2 * n_in * n_out
    assert "forward" not in vars(layer)  # the next call is an ordinary one
    layer(x)
    assert counter.per_sample == 2 * n_in * n_out


def test_model_cost_logs_parameters_at_the_start_and_flops_of_the_model_alone():
    n_in, n_out = 6, 1
    model = nn.Linear(n_in, n_out)

    def loss_with_extra_work(m, batch):  # work outside the model is not the model's cost
        x, y = batch
        extra = nn.functional.linear(x, torch.ones(50, n_in)).sum() * 0
        return mse_loss(m, batch) + extra

    sink = RecordingSink()
    train(
        model,
        loss_with_extra_work,
        regression_data(),
        config(max_steps=3),
        callbacks=[ModelCost(sink)],
    )
    assert sink.metrics[0] == (0, {"parameters": 7, "trainable_parameters": 7})
    assert sink.metrics[1] == (1, {"flops_per_sample": 2 * n_in * n_out})
    assert parameter_count(mlp(hidden=16))["parameters"] == 6 * 16 + 16 + 16 + 1


def test_grad_norm_and_throughput_come_at_their_intervals_and_the_last_step():
    logging = LoggingConfig.from_params({"grad_norm": {"every": 3}, "throughput": {"every": 4}})
    sink = RecordingSink()
    train(
        mlp(), mse_loss, regression_data(), config(logging=logging), callbacks=[StepScalars(sink)]
    )
    assert sink.steps_of("grad_norm") == [3, 6, 9, 10]
    assert sink.steps_of("samples_per_second") == [4, 8, 10]
    assert all(v > 0 for v in sink.values_of("samples_per_second"))


@pytest.mark.parametrize("max_grad_norm", [None, 0.01])
def test_the_logged_grad_norm_is_the_norm_before_clipping(max_grad_norm):
    data = regression_data()
    model = mlp()
    reference = copy.deepcopy(model)
    x, y = data.tensors[0][:4], data.tensors[1][:4]  # the first batch (no shuffle)
    mse_loss(reference, (x, y)).backward()
    expected = torch.sqrt(sum(p.grad.pow(2).sum() for p in reference.parameters()))
    sink = RecordingSink()
    logging = LoggingConfig.from_params({"grad_norm": {"every": 1}})
    cfg = config(max_steps=1, shuffle=False, max_grad_norm=max_grad_norm, logging=logging)
    train(model, mse_loss, data, cfg, callbacks=[StepScalars(sink)])
    assert sink.values_of("grad_norm")[0] == pytest.approx(float(expected), rel=1e-5)


def test_switched_off_diagnostics_log_nothing_and_leave_the_run_unchanged():
    off = LoggingConfig.from_params(
        {name: {"enabled": False} for name in ("grad_norm", "throughput", "flops")}
    )
    sink = RecordingSink()
    plain = train(mlp(), mse_loss, regression_data(), config())
    quiet = train(
        mlp(),
        mse_loss,
        regression_data(),
        config(logging=off),
        callbacks=[StepScalars(sink), ModelCost(sink)],
    )
    watched = train(
        mlp(),
        mse_loss,
        regression_data(),
        config(),
        callbacks=[StepScalars(RecordingSink()), ModelCost(RecordingSink())],
    )
    assert sink.metrics == []
    for result in (quiet, watched):  # the FLOPs count runs inside the real step: same weights
        for k, v in plain.model_state.items():
            assert torch.equal(v, result.model_state[k]), k


def test_without_an_mlflow_run_figures_go_to_the_checkpoint_folder(tmp_path):
    from matplotlib.figure import Figure

    sink = DiagnosticsSink(prefix="job", folder=tmp_path / "diagnostics")
    figure = Figure()
    figure.subplots().plot([0, 1])
    where = sink.log_figure(figure, "curve")
    assert where == str(tmp_path / "diagnostics" / "curve.png")
    assert (tmp_path / "diagnostics" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert DiagnosticsSink(folder=None).log_figure(figure, "curve") is None
    sink.log_metrics({"x": 1.0}, 3)  # no run: nothing to do, and no error
