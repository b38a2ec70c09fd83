"""Part 2 on Stable Diffusion at test size: merging LoRA, DDPO on SD's latents with LoRA, the
KL reference with the adapters off, and the samplers' grayscale output."""

from __future__ import annotations

import pytest
import torch

from medgen.text2image.pretrained import add_lora, load_stable_diffusion
from medgen.text2image.pretrained_rlhf import AdaptersOff, merge_lora, sd_policy
from medgen.text2image.reinforce import DDPOLoss, PolicyNetwork, ReinforceParams
from medgen.text2image.samplers import StableDiffusionSampler, rgb_to_gray
from tests.text2image.tiny_sd import save_tiny_stable_diffusion
from tests.torch_threads import single_torch_thread  # noqa: F401

CAPTIONS = [
    "Brain MRI, FLAIR: without visible metastases",
    "Brain MRI, T1 post-gadolinium: 1 metastasis of 9 mm in the left frontal lobe",
]
REINFORCE = {
    "rounds": 2,
    "prompts_per_round": 2,
    "images_per_prompt": 2,
    "num_steps": 3,
    "guidance_scale": 2.0,
    "noise_level": 1.0,
    "steps_per_update": 1,
    "ppo_epochs": 1,
    "clip_range": 0.2,
    "advantage_clip": 5.0,
    "kl_weight": 0.1,
    "training": {"lr": 1.0e-3, "progress": False, "log_every": 1, "seed": 0},
}


class Darkness:
    """A stand-in reward: minus the mean intensity (known, checkable)."""

    def __call__(self, images, prompts):
        value = -images.mean(dim=(1, 2, 3))
        return {"reward": value, "selector": value, "policy": value}


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd"))


def _unet_output(unet, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=generator)
    hidden = torch.randn(2, 5, 16, generator=generator)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=hidden).sample


def _trained_lora_state(sd_folder, rank=2):
    unet = load_stable_diffusion(str(sd_folder)).unet
    torch.manual_seed(1)
    add_lora(unet, rank)
    with torch.no_grad():  # peft starts B at zero (an identity adapter): make it a real one
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    state = {f"unet.{k}": v.clone() for k, v in unet.state_dict().items() if "lora_" in k}
    return unet, state


def test_merging_lora_gives_the_adapted_model_without_adapter_layers(sd_folder):
    adapted, state = _trained_lora_state(sd_folder)
    base = load_stable_diffusion(str(sd_folder)).unet
    before = _unet_output(base)
    merged = merge_lora(load_stable_diffusion(str(sd_folder)).unet, state, 2, None)
    assert not any("lora_" in k for k in merged.state_dict())
    assert merged.state_dict().keys() == base.state_dict().keys()
    torch.testing.assert_close(_unet_output(merged), _unet_output(adapted), atol=1e-5, rtol=1e-4)
    assert (_unet_output(merged) - before).abs().max() > 1e-3  # the adapters did change it


def test_a_lora_state_of_another_rank_is_refused(sd_folder):
    _, state = _trained_lora_state(sd_folder, rank=2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        merge_lora(load_stable_diffusion(str(sd_folder)).unet, state, 4, None)


def _policy(sd_folder, start=None, checkpointing=False):
    return sd_policy(
        str(sd_folder), start or {}, lora_rank=2, lora_alpha=None,
        gradient_checkpointing=checkpointing, resolution=8, output_size=12, seed=0,
    )  # fmt: skip


@pytest.mark.parametrize("checkpointing", [False, True])
def test_ddpo_on_stable_diffusion_trains_only_the_adapters_on_policy_first(
    sd_folder, checkpointing
):
    # gradient checkpointing recomputes activations: the frozen base must still pass gradients
    # to the adapters (a re-entrant checkpoint with no input requiring grad would drop them)
    denoiser, task, tokenizer = _policy(sd_folder, checkpointing=checkpointing)
    assert denoiser.unet.is_gradient_checkpointing == checkpointing
    # the tiny VAE has one level: latents at the pixels' side (SD 1.5's three levels: / 8)
    assert task.space.factor == 1 and task.space.spatial_shape((8, 8)) == (8, 8)
    assert task.out_channels == 4
    tokens = tokenizer(CAPTIONS, padding="max_length", truncation=True, return_tensors="pt")
    params = ReinforceParams.from_params(REINFORCE)
    loss = DDPOLoss(
        task, AdaptersOff(denoiser), Darkness(), tokens.input_ids, CAPTIONS, params, 8, seed=0
    )
    # DDIM with eta 1: the steps before the last are stochastic, the last one (to x_0) is not
    assert loss.per_round == 2
    policy = PolicyNetwork(denoiser)
    value = loss(policy, {"step": torch.tensor([0])})
    stats = policy.pop_component_means()
    assert stats["ratio"] == 1.0 and stats["clip_fraction"] == 0.0
    # fresh LoRA adapters leave the UNet as it was: the policy is still its reference
    assert stats["kl_reference"] == 0.0
    assert loss.trajectory.final.shape == (4, 4, 8, 8)  # SD latents, not pixels
    value.backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert sum(g.abs().sum().item() for g in grads.values()) > 0
    assert all(p.grad is None for n, p in policy.named_parameters() if "lora_" not in n)


def test_the_kl_reference_is_the_model_with_its_adapters_off(sd_folder):
    denoiser, _, tokenizer = _policy(sd_folder)
    with torch.no_grad():
        for name, p in denoiser.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    tokens = tokenizer(CAPTIONS, padding="max_length", truncation=True, return_tensors="pt")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 900])
    reference = AdaptersOff(denoiser)
    with torch.no_grad():
        adapted = denoiser(x, t, tokens.input_ids)
        off = reference(x, t, tokens.input_ids)
        plain = sd_policy_base(sd_folder)(x, t, tokens.input_ids)
    torch.testing.assert_close(off, plain, atol=1e-5, rtol=1e-4)
    assert (adapted - off).abs().max() > 1e-3
    assert list(reference.parameters()) == []  # no second copy of the weights
    torch.testing.assert_close(denoiser(x, t, tokens.input_ids), adapted)  # switched back on


def sd_policy_base(sd_folder):
    """The same denoiser without adapters (the merged start model when nothing was merged)."""
    denoiser, _, _ = _policy(sd_folder)
    denoiser.unet.disable_lora()
    return denoiser


def test_stable_diffusion_sampler_returns_seeded_gray_images(sd_folder):
    pipe = load_stable_diffusion(str(sd_folder))
    sampler = StableDiffusionSampler(pipe, resolution=8, output_size=12, num_inference_steps=2)
    options = dict(images_per_prompt=2, guidance_scale=2.0, num_steps=None, seed=3)
    images = sampler(CAPTIONS, **options)
    assert images.shape == (4, 1, 12, 12) and images.abs().max() <= 1
    torch.testing.assert_close(sampler(CAPTIONS, **options), images)
    rgb = torch.stack([torch.full((4, 4), v) for v in (-1.0, 0.0, 0.5)])[None]
    torch.testing.assert_close(rgb_to_gray(rgb, 4), torch.full((1, 1, 4, 4), -0.5 / 3))
