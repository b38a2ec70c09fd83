"""The Stable Diffusion path on a tiny pipeline built from configs (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch

from medgen.datasets import TensorBundle
from medgen.text2image.pretrained import (
    STABLE_DIFFUSION_V1_5,
    PretrainedModelNotFoundError,
    apply_finetuned_weights,
    baseline_generation,
    build_sd_finetune_task,
    clip_tokens,
    finetune_stable_diffusion,
    load_stable_diffusion,
    strategy_for_scheduler,
)
from medgen.training.checkpoint import LATEST, load_checkpoint
from tests.text2image.tiny_sd import SD15_SCHEDULE, save_tiny_stable_diffusion
from tests.torch_threads import single_torch_thread  # noqa: F401

CAPTIONS = [
    "flair brain mri without visible metastases.",
    "t1 brain mri with 2 metastases; largest 14 mm in the left frontal lobe.",
    "bravo brain mri with a single metastasis.",
    "flair brain mri with 3 metastases; largest 9 mm in the cerebellum.",
]
TRAINING = {
    "max_steps": 2,
    "batch_size": 2,
    "lr": 1e-3,
    "log_every": 1,
    "progress": False,
    "device": "cpu",
    "seed": 0,
}


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def images() -> TensorBundle:
    pixels = torch.rand(len(CAPTIONS), 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return TensorBundle({"images": pixels * 2 - 1}, {"texts": CAPTIONS})


def test_baseline_generation_is_seeded_and_in_range(sd_folder):
    pipe = load_stable_diffusion(str(sd_folder), local_files_only=True)
    assert pipe.safety_checker is None
    options = dict(num_inference_steps=2, guidance_scale=3.0, height=8, width=8)
    first = baseline_generation(pipe, CAPTIONS[:2], num_images_per_prompt=1, seed=1, **options)
    again = baseline_generation(pipe, CAPTIONS[:2], num_images_per_prompt=1, seed=1, **options)
    other = baseline_generation(pipe, CAPTIONS[:2], num_images_per_prompt=1, seed=2, **options)
    assert first.shape == (2, 3, 8, 8) and first.dtype == torch.float32
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_missing_weights_say_what_and_where(tmp_path, sd_folder):
    with pytest.raises(PretrainedModelNotFoundError) as missing_folder:
        load_stable_diffusion(str(tmp_path / "nowhere"))
    message = str(missing_folder.value)
    assert "does not exist" in message and "model_index.json" in message
    assert "runwayml/stable-diffusion-v1-5" in message and "removed" in message
    assert isinstance(missing_folder.value, FileNotFoundError)

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model_index.json").write_text((sd_folder / "model_index.json").read_text())
    with pytest.raises(PretrainedModelNotFoundError, match="lacks unet, vae, text_encoder"):
        load_stable_diffusion(str(partial))

    with pytest.raises(PretrainedModelNotFoundError) as not_cached:
        load_stable_diffusion(STABLE_DIFFUSION_V1_5, cache_dir=tmp_path / "hub")
    message = str(not_cached.value)
    assert "not in the HuggingFace cache" in message
    assert str(tmp_path / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5") in message


def test_strategy_has_the_stable_diffusion_schedule():
    from diffusers import DDPMScheduler, PNDMScheduler

    strategy = strategy_for_scheduler(SD15_SCHEDULE, cond_drop_prob=0.1)
    for scheduler in (DDPMScheduler(**SD15_SCHEDULE), PNDMScheduler(**SD15_SCHEDULE)):
        assert torch.allclose(
            strategy.alphas_cumprod.double(), scheduler.alphas_cumprod.double(), atol=1e-6, rtol=0
        )
    assert strategy.cond_drop_prob == 0.1 and not strategy.clip_sample
    v = strategy_for_scheduler({**SD15_SCHEDULE, "prediction_type": "v_prediction"})
    assert str(v.prediction_type) == "v_prediction"
    with pytest.raises(ValueError, match="no medgen DDPMStrategy equivalent"):
        strategy_for_scheduler({**SD15_SCHEDULE, "beta_schedule": "squaredcos_cap_v2"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        strategy_for_scheduler({**SD15_SCHEDULE, "rescale_betas_zero_snr": True})


def test_full_unet_finetuning_through_the_job(sd_folder, images, tmp_path):
    base = load_stable_diffusion(str(sd_folder)).unet.state_dict()
    options = dict(pretrained=str(sd_folder), training=TRAINING, resolution=8)
    state, report = finetune_stable_diffusion(
        images, lora_rank=None, checkpoint_dir=tmp_path / "full", **options
    )
    assert set(state) == {f"unet.{k}" for k in base}
    assert any(not torch.equal(state[f"unet.{k}"], v) for k, v in base.items())
    assert report["steps"] == 2 and len(report["loss_history"]) == 2 and not report["skipped"]
    assert report["trained_parameters"] == sum(v.numel() for v in base.values())
    # the checkpoint holds the trained UNet, not the frozen VAE and text encoder
    assert set(load_checkpoint(tmp_path / "full" / LATEST)["model"]) == set(state)

    pipe = apply_finetuned_weights(load_stable_diffusion(str(sd_folder)), state, lora_rank=None)
    assert all(torch.equal(pipe.unet.state_dict()[k], state[f"unet.{k}"]) for k in base)
    _, again = finetune_stable_diffusion(
        images, lora_rank=None, checkpoint_dir=tmp_path / "full", **options
    )
    assert again["skipped"]


def test_lora_finetuning_changes_only_adapters(sd_folder, images, tmp_path):
    base_pipe = load_stable_diffusion(str(sd_folder))
    base = base_pipe.unet.state_dict()
    state, report = finetune_stable_diffusion(
        images,
        pretrained=str(sd_folder),
        training=TRAINING,
        lora_rank=2,
        checkpoint_dir=tmp_path / "lora",
        resolution=8,
    )
    assert state and all("lora_" in k and k.startswith("unet.") for k in state)
    assert report["trained"] == "lora" and report["lora_alpha"] == 2
    assert report["trained_parameters"] < sum(v.numel() for v in base.values()) / 5
    assert set(load_checkpoint(tmp_path / "lora" / LATEST)["model"]) == set(state)
    assert any(k.endswith("lora_B.default.weight") and v.abs().sum() > 0 for k, v in state.items())

    tuned = apply_finetuned_weights(load_stable_diffusion(str(sd_folder)), state, lora_rank=2)
    for key, value in base.items():  # base weights untouched (peft wraps them as base_layer)
        tuned_key = key.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias"
        )
        tuned_state = tuned.unet.state_dict()
        assert torch.equal(tuned_state.get(key, tuned_state.get(tuned_key)), value)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden = base_pipe.text_encoder(clip_tokens(base_pipe.tokenizer, CAPTIONS[:1]))[0]
    with torch.no_grad():
        before = base_pipe.unet(x, 500, encoder_hidden_states=hidden).sample
        after = tuned.unet(x, 500, encoder_hidden_states=hidden).sample
    assert not torch.allclose(before, after)


def test_bad_inputs_fail_in_the_node(sd_folder, tmp_path):
    bundle = TensorBundle({"images": torch.zeros(2, 1, 8, 8)}, {"texts": ["one caption"]})
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        finetune_stable_diffusion(
            bundle,
            pretrained=str(sd_folder),
            training=TRAINING,
            lora_rank=None,
            checkpoint_dir=None,
        )
    bundle = TensorBundle({"images": torch.full((1, 1, 8, 8), 3.0)}, {"texts": ["x"]})
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        finetune_stable_diffusion(
            bundle,
            pretrained=str(sd_folder),
            training=TRAINING,
            lora_rank=None,
            checkpoint_dir=None,
        )


def test_denoiser_state_null_condition_and_ema_copy(sd_folder, images):
    from torch.optim.swa_utils import AveragedModel

    task = build_sd_finetune_task(
        {"images": TensorBundle({"images": images["images"], "tokens": torch.ones(4, 32).long()})},
        pretrained=str(sd_folder),
        lora_rank=2,
        seed=0,
        resolution=8,
    )
    model = task.model.eval()
    state = model.state_dict()
    assert set(state) == model.trained_names() and all("lora_" in k for k in state)
    model.load_state_dict(state)  # strict: the frozen rest is filled from the module
    ema = AveragedModel(model)
    assert set(ema.state_dict()) == {"n_averaged"} | {f"module.{k}" for k in state}
    ema.load_state_dict(ema.state_dict())

    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    empty = clip_tokens(model_tokenizer(sd_folder), ["", ""])
    with torch.no_grad():
        null = model(x, t, tokens=torch.zeros_like(empty))
        assert torch.equal(null, model(x, t, tokens=empty))
        assert torch.equal(null, model(x, t))
    batch = {
        k: torch.stack([task.train_data[i][k] for i in range(2)]) for k in ("images", "tokens")
    }
    assert torch.isfinite(task.loss_fn(model, batch))


def model_tokenizer(folder):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder / "tokenizer")


def test_pipeline_step_runs_baseline_and_lora_finetuning_or_says_it_is_disabled(
    sd_folder, images, tmp_path
):
    from medgen.text2image.params import PretrainedParams, PretrainedPart2Params
    from medgen.text2image.pretrained_report import pretrained_baseline_report

    params = dict(
        enabled=True,
        model=str(sd_folder),
        cache_dir=None,
        num_inference_steps=2,
        guidance_scale=3.0,
        resolution=8,
        images_per_prompt=1,
        finetune=True,
        lora_rank=2,
        training=TRAINING,
        part2=PretrainedPart2Params(False, 2, None, False, TRAINING, {}),
    )
    report = pretrained_baseline_report(
        PretrainedParams(**params), CAPTIONS[:2], images, tmp_path / "sd"
    )
    assert report["status"] == "ran" and report["baseline"]["images"] == 2
    assert report["finetuned"]["steps"] == 2 and report["finetuned"]["generation"]["images"] == 2
    off = pretrained_baseline_report(PretrainedParams(**{**params, "enabled": False}), CAPTIONS)
    assert off["status"] == "disabled" and "enabled: true" in off["how_to_enable"]
    missing = PretrainedParams(**{**params, "model": str(tmp_path / "absent")})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretrained_baseline_report(missing, CAPTIONS)
