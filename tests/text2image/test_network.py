"""`TextConditionedUNet`: the token contract with the diffusion core, and joint training."""

from __future__ import annotations

import pytest
import torch

from medgen.diffusion import DDPMStrategy
from medgen.text2image.network import (
    TextConditionedUNetConfig,
    build_text_conditioned_unet,
)
from medgen.text2image.tokenizer import (
    PAD_ID,
    empty_prompt_ids,
    tokenize,
    tokenizer_info,
    train_tokenizer,
)
from tests.torch_threads import single_torch_thread  # noqa: F401

CAPTIONS = [
    "FLAIR brain MRI without visible metastases.",
    "T1-weighted post-gadolinium brain MRI with 2 metastases; largest 14 mm in the left lobe.",
    "BRAVO post-contrast T1 brain MRI with a single metastasis; largest 9 mm in the cerebellum.",
]
TINY = {
    "text_hidden_size": 16,
    "text_layers": 1,
    "text_heads": 2,
    "text_intermediate_size": 32,
    "block_out_channels": [8, 16],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "attention_head_dim": 4,
    "norm_num_groups": 4,
    "sample_size": 16,
    "pooled_text_embedding": True,
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS, vocab_size=100, min_frequency=1, max_length=24)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    net = build_text_conditioned_unet(TINY, tokenizer_info(tokenizer), 1, 1)
    return net.eval()


def noise(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_forward_shape_and_prompts_matter(model, tokenizer):
    x = noise(1).expand(3, -1, -1, -1)
    t = torch.tensor([10, 10, 10])
    with torch.no_grad():
        out = model(x, t, tokens=tokenize(tokenizer, CAPTIONS))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # the same noise and timestep, three prompts: three different predictions
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_all_padding_row_is_the_empty_prompt(model, tokenizer):
    empty = empty_prompt_ids(tokenizer)
    assert torch.equal(model.empty_prompt, empty)
    prompts = tokenize(tokenizer, CAPTIONS[:2])
    x, t = noise(3, seed=1), torch.tensor([5, 500, 999])
    null = torch.cat([prompts, torch.zeros_like(prompts[:1])])
    explicit = torch.cat([prompts, empty[None]])
    with torch.no_grad():
        a = model(x, t, tokens=null)
        b = model(x, t, tokens=explicit)
        c = model(x, t)  # no tokens: the empty prompt everywhere
        d = model(x, t, tokens=torch.zeros_like(null))
    assert torch.equal(a, b)
    assert torch.equal(c, d)
    assert not torch.allclose(a[0], c[0])


def test_gradients_reach_the_text_encoder(tokenizer):
    torch.manual_seed(0)
    net = build_text_conditioned_unet(TINY, tokenizer_info(tokenizer), 1, 1)
    strategy = DDPMStrategy(num_train_timesteps=100)
    loss = strategy.training_loss(
        net, noise(3), tokenize(tokenizer, CAPTIONS), generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    text_grads = [p.grad for p in net.text_encoder.parameters() if p.grad is not None]
    assert text_grads and any(g.abs().sum() > 0 for g in text_grads)
    embedding = net.text_encoder.get_input_embeddings().weight.grad
    used = tokenize(tokenizer, CAPTIONS).unique()
    used = used[used != PAD_ID]  # padding is masked: its embedding gets no gradient
    assert (embedding[used].abs().sum(dim=1) > 0).all()
    assert all(p.grad is not None for p in net.unet.parameters() if p.requires_grad)


def test_guided_sampling_runs_with_token_conditions(model, tokenizer):
    strategy = DDPMStrategy(num_train_timesteps=100, num_inference_steps=2)
    images = strategy.sample(
        model,
        (2, 1, 16, 16),
        tokenize(tokenizer, CAPTIONS[:2]),
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert images.shape == (2, 1, 16, 16) and torch.isfinite(images).all()


def test_config_errors_name_the_key(tokenizer):
    info = tokenizer_info(tokenizer)
    with pytest.raises(ValueError, match="did you mean 'text_layers'"):
        build_text_conditioned_unet({**TINY, "text_layer": 2}, info, 1, 1)
    missing = {k: v for k, v in TINY.items() if k != "sample_size"}
    with pytest.raises(ValueError, match="sample_size"):
        build_text_conditioned_unet(missing, info, 1, 1)
    with pytest.raises(ValueError, match="norm_num_groups"):
        TextConditionedUNetConfig.from_params({**TINY, "norm_num_groups": 3})
    with pytest.raises(ValueError, match="one entry per level"):
        TextConditionedUNetConfig.from_params({**TINY, "up_block_types": ["UpBlock2D"]})
    with pytest.raises(ValueError, match="tokenizer_info lacks"):
        build_text_conditioned_unet(TINY, {"vocab_size": 10}, 1, 1)
    with pytest.raises(ValueError, match="tokens must be"):
        build_text_conditioned_unet(TINY, info, 1, 1)(
            noise(1), torch.tensor([1]), tokens=torch.zeros(1, 3, dtype=torch.long)
        )


def test_latent_space_generator_trains_and_generates_through_the_2d_autoencoder(tmp_path):
    from medgen.autoencoder.kl import build_kl_autoencoder
    from medgen.autoencoder.training_2d import to_weights_bundle
    from medgen.text2image.generator import generate_images, load_generator, train_text2image

    torch.manual_seed(0)
    ae = build_kl_autoencoder(
        {"channels": [8, 8, 16], "latent_channels": 2, "norm_num_groups": 8}, in_channels=1
    )
    weights = to_weights_bundle(ae, modalities=["gray"])
    latent_space = {
        "latent_channels": 2,
        "downsample_factor": 4,
        "scale_factor": 1.0,
        "per_channel": False,
    }
    info = {"vocab_size": 20, "bos_id": 2, "eos_id": 3, "max_length": 6}
    tokens = torch.tensor([[2, 5, 3, 0, 0, 0], [2, 6, 7, 3, 0, 0]] * 2)
    outcome, tc = train_text2image(
        torch.rand(4, 1, 16, 16) * 2 - 1,
        tokens,
        strategy={"name": "rflow", "num_inference_steps": 2},
        channels=["gray"],
        network={**TINY, "sample_size": 4},
        tokenizer_info=info,
        training={"max_steps": 2, "batch_size": 2, "progress": False},
        checkpoint_dir=tmp_path / "job",
        latent_space=latent_space,
        autoencoder=weights,
    )
    assert tc["space"]["name"] == "latent" and outcome.result.steps == 2
    from medgen.datasets import TensorBundle

    bundle = TensorBundle(
        outcome.result.model_state,
        {"task_config": tc, "network": {**TINY, "sample_size": 4}, "tokenizer_info": info},
    )
    task, net = load_generator(bundle, weights)
    images = generate_images(
        task,
        net,
        tokens[:2],
        resolution=16,
        images_per_prompt=1,
        guidance_scale=1.0,
        num_steps=2,
        seed=0,
    )
    assert images.shape == (2, 1, 16, 16) and images.abs().max() <= 1
    with pytest.raises(ValueError, match="2D model"):
        load_generator(bundle)
