"""`python -m medgen.check_config`: every environment's parameters parsed, every model built on
the meta device, and the memory of one training step measured without memory."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from medgen.check_config import check_environment, markdown
from medgen.check_config.__main__ import main
from medgen.check_config.jobs import parameters_on_meta
from medgen.check_config.memory import activation_bytes, measure_step, state_bytes
from medgen.check_config.parameters import load_parameters
from medgen.datasets import TensorBundle
from medgen.generation.training_job import build_diffusion_task
from medgen.training.distributed import Resources
from tests.conf_parameters import REPO

CONF = REPO / "conf"
GIB = 2**30
#: every training job's model, per pipeline (data_processing trains none): the autoencoder's
#: two progressive 2D phases (three on the cluster: 64², 128², 256²) and two 3D stages
MODELS = {
    "autoencoder": 4,
    "latent_diffusion": 3,
    "inpainting": 3,
    "text2image_rlhf": 1,
    "evaluation": 2,
}


def mse(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(batch).pow(2).mean()


def test_a_linear_layer_saves_its_input_and_autocast_its_weight_copy():
    """Exact bytes of ``mean(linear(x) ** 2)``: the matmul saves its input x [3, 8] (for the
    weight's gradient; the weight itself is the model's, not counted), the square saves the
    output [3, 4]; under bf16 autocast both are 16-bit copies, and when x needs a gradient too
    (any hidden layer) the matmul also saves autocast's 16-bit copy of the weight [4, 8]."""
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    assert activation_bytes(layer, mse, x, "fp32") == 3 * 8 * 4 + 3 * 4 * 4
    assert activation_bytes(layer, mse, x, "bf16") == 3 * 8 * 2 + 3 * 4 * 2
    hidden = x.clone().requires_grad_(True)
    assert activation_bytes(layer, mse, hidden, "bf16") == 3 * 8 * 2 + 4 * 8 * 2 + 3 * 4 * 2


def test_the_meta_measurement_equals_the_saved_bytes_of_a_real_step():
    """A diffusion UNet built by the 2D job's factory: fake tensors at batches 2 and 3,
    extrapolated to 5 (and at 3 as it is), give exactly the bytes a real CPU forward saves."""
    size, channels = 16, 1
    task_config = {"strategy": {"name": "rflow"}, "mode": "bravo", "modalities": ["bravo"]}
    backbone = {
        "channels": [8, 16],
        "attention_levels": [False, True],
        "num_head_channels": 8,
        "norm_num_groups": 8,
    }

    def data(n):
        return {
            "slices": TensorBundle(
                {
                    "images": torch.zeros(n, channels, size, size),
                    "seg": torch.zeros(n, 1, size, size),
                }
            )
        }

    real = build_diffusion_task(data(5), task_config, backbone, seed=0)
    batch = {"images": torch.zeros(5, channels, size, size), "seg": torch.zeros(5, 1, size, size)}
    expected = activation_bytes(real.model, real.loss_fn, batch, "fp32")

    with parameters_on_meta():
        meta = build_diffusion_task(data(1), task_config, backbone, seed=0)
    assert all(p.is_meta for p in meta.model.parameters())
    memory = measure_step(
        meta.model,
        meta.loss_fn,
        meta.train_data[0],
        batch_size=5,
        precision="fp32",
        ema=True,
        world_size=1,
    )
    assert memory.activations == memory.activations_fp32 == expected
    values = sum(p.numel() for p in real.model.parameters())
    values += sum(b.numel() for b in real.model.buffers())
    assert memory.parameters == sum(p.numel() for p in real.model.parameters())
    assert memory.states == 4 * values + 12 * memory.trainable + 4 * values  # + EMA


def test_states_count_gradients_adamw_ema_and_ddp_buckets():
    layer = nn.Linear(8, 4)  # 36 parameters, no buffers
    assert state_bytes(layer, ema=False, world_size=1) == 36 * (4 + 4 + 8)
    assert state_bytes(layer, ema=True, world_size=8) == 36 * (4 + 4 + 8 + 4 + 4)
    layer.weight.requires_grad_(False)  # frozen: its weights only
    assert state_bytes(layer, ema=False, world_size=1) == 36 * 4 + 4 * (4 + 8)


def test_scheduler_variables_are_absent_while_parameters_resolve(monkeypatch):
    monkeypatch.setenv("SLURM_NNODES", "3")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "7")
    params = load_parameters("cluster", CONF)
    resources = Resources.from_dict(params["latent_diffusion"]["shared"]["resources"])
    assert (resources.nnodes, resources.nproc_per_node) == (1, 4)  # conf/cluster's defaults
    assert resources.rdzv_endpoint == "localhost:29500" and resources.rdzv_id is None
    assert os.environ["SLURM_NNODES"] == "3"  # restored


@pytest.fixture(scope="module", params=["base", "test", "cluster"])
def environment(request):
    return check_environment(request.param, CONF)


def test_every_block_parses_and_every_model_is_built(environment):
    check = environment
    assert not check.problems, "\n".join(check.problems)
    counts = {p: sum(m.pipeline == p for m in check.models) for p in MODELS}
    phases = 3 if check.env == "cluster" else 2
    assert counts == {**MODELS, "autoencoder": phases + 2}
    assert all(m.memory is not None and m.memory.parameters > 0 for m in check.models)
    assert all(m.memory.activations > 0 for m in check.models)
    parsed = {b.name for b in check.blocks if b.status == "ok"}
    assert {"cohort", "split", "latent_diffusion.shared", "inpainting.diffusion"} <= parsed
    report = markdown(check)
    assert f"`--env {check.env}`" in report and report.count("\n| ") == len(check.models) + 1


def test_the_cluster_sizes_fit_an_80_gb_gpu_and_use_16_bit_precision(environment):
    if environment.env != "cluster":
        pytest.skip("the cluster's sizes only")
    gpu_jobs = [m for m in environment.models if m.pipeline != "evaluation"]
    assert all(m.precision == "bf16" for m in gpu_jobs)
    too_big = [(m.model, m.memory.total / GIB) for m in gpu_jobs if m.memory.total > 80e9]
    assert not too_big
    unet = next(m for m in gpu_jobs if m.model.startswith("2D images model"))
    assert unet.batch_size == 16 and unet.world_size == 4 and "(128²)" in unet.model


def test_a_key_the_code_would_refuse_is_reported_with_its_hint():
    check = check_environment(
        "test",
        CONF,
        runtime_params={"latent_diffusion": {"shared": {"stratgy": "ddpm"}}},
        pipelines=["latent_diffusion"],
    )
    assert any(
        "params:latent_diffusion.shared" in p and "did you mean 'strategy'" in p
        for p in check.problems
    ), check.problems


@pytest.mark.parametrize(
    ("override", "block", "hint"),
    [
        ({"pretrained": {"part2": {"lora_rnak": 4}}}, "text2image.pretrained", "lora_rank"),
        (
            {"pretrained": {"part2": {"reinforce": {"round": 2}}}},
            "text2image.pretrained",
            "rounds",
        ),
        ({"reinforce": {"kl_wieght": 0.1}}, "text2image.reinforce", "kl_weight"),
        ({"best_of_n": {"attempt": 3}}, "text2image.best_of_n", "attempts"),
    ],
)
def test_a_refused_part2_key_of_text2image_is_reported(override, block, hint):
    check = check_environment(
        "cluster", CONF, runtime_params={"text2image": override}, pipelines=["text2image_rlhf"]
    )
    assert any(f"params:{block}" in p and f"did you mean '{hint}'" in p for p in check.problems), (
        check.problems
    )
    assert not any("no reader" in p for p in check.problems)


def test_the_command_writes_the_report_and_exits_1_on_a_problem(tmp_path, capsys):
    output = tmp_path / "report.md"
    assert main(["--env", "test", "--pipelines", "data_processing", "--output", str(output)]) == 0
    assert "## `--env test`" in output.read_text() and "parsed" in capsys.readouterr().out
    bad = tmp_path / "conf"
    (bad / "base").mkdir(parents=True)
    (bad / "base" / "parameters.yml").write_text(
        (CONF / "base" / "parameters_data_processing.yml")
        .read_text()
        .replace("seed: 42", "sed: 42", 1)
    )
    (bad / "local").mkdir()
    assert main(["--conf-source", str(bad), "--pipelines", "data_processing"]) == 1
    assert "did you mean 'seed'" in capsys.readouterr().out
