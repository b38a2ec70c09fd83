"""Text → image as a mode of the core: token ids reach the network as ``tokens=``, the null
prompt is all padding, and guidance stacks prompt and null prompt in one call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medgen.diffusion import TextMode, build_task, drop_condition, is_token_ids, null_condition


class TokenNet(nn.Module):
    """Output = x·0 + a learned value per prompt (mean token embedding); records every call."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 1)
        self.calls: list[torch.Tensor] = []

    def forward(self, x, timesteps, tokens=None):
        assert tokens is not None, "a text mode must pass tokens="
        self.calls.append(tokens.clone())
        value = self.embed(tokens).mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return x * 0 + value


def text_task(**strategy):
    return build_task(
        {
            "strategy": {"name": "rflow", "num_train_timesteps": 20, "num_inference_steps": 3},
            "mode": "text",
            "modalities": ["gray"],
        }
    )


def test_text_mode_adds_no_channels_and_checks_tokens():
    task = text_task()
    assert isinstance(task.mode, TextMode)
    assert task.in_channels == 1 and task.out_channels == 1
    with pytest.raises(ValueError, match=r"integer tensor \[B, L\]"):
        task.mode.condition({"tokens": torch.zeros(2, 3)})
    with pytest.raises(KeyError, match="tokens"):
        task.mode.condition({"images": torch.zeros(1, 1, 4, 4)})


def test_tokens_reach_the_network_and_prompts_change_the_sample():
    task = text_task()
    model = TokenNet()
    a = torch.tensor([[2, 5, 3, 0]])
    b = torch.tensor([[2, 7, 9, 3]])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out_a = task.generate(model, cond=a, spatial_shape=(4, 4), generator=g())
    out_b = task.generate(model, cond=b, spatial_shape=(4, 4), generator=g())
    assert out_a.shape == (1, 1, 4, 4) and not torch.allclose(out_a, out_b)
    assert all(torch.equal(c, a) for c in model.calls[:3])


def test_guidance_stacks_the_null_prompt_of_all_padding():
    task = text_task()
    model = TokenNet()
    prompt = torch.tensor([[2, 5, 3, 0], [2, 6, 3, 0]])
    task.generate(model, cond=prompt, spatial_shape=(4, 4), guidance_scale=3.0)
    first = model.calls[0]
    assert first.shape == (4, 4)  # one call on 2B rows per step
    assert torch.equal(first[:2], prompt) and torch.equal(first[2:], torch.zeros_like(prompt))
    assert is_token_ids(prompt) and torch.equal(null_condition(prompt), torch.zeros_like(prompt))


def test_caption_dropout_replaces_whole_prompts_by_padding():
    prompts = torch.arange(1, 41).view(10, 4)
    dropped = drop_condition(prompts, 0.5, torch.Generator().manual_seed(0))
    kept = (dropped == prompts).all(dim=1)
    empty = (dropped == 0).all(dim=1)
    assert bool((kept | empty).all()) and kept.any() and empty.any()


def test_training_loss_with_tokens():
    task = text_task()
    model = TokenNet()
    batch = {"images": torch.rand(2, 1, 4, 4) * 2 - 1, "tokens": torch.tensor([[2, 5], [2, 6]])}
    loss = task.loss(model, batch, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.embed.weight.grad.abs().sum() > 0
