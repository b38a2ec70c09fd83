"""DDPO on the text2image generator: the round structure, the signed objective, exact resume."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from medgen.diffusion import build_task
from medgen.text2image.network import build_text_conditioned_unet
from medgen.text2image.reinforce import DDPOLoss, PolicyNetwork, ReinforceParams, RoundSteps
from medgen.text2image.tokenizer import tokenize, tokenizer_info, train_tokenizer
from medgen.training import train
from medgen.training.callbacks import LossComponentsLogger
from medgen.training.checkpoint import LATEST, kept_name
from tests.text2image.test_network import CAPTIONS, TINY
from tests.torch_threads import single_torch_thread  # noqa: F401

REINFORCE = {
    "rounds": 3,
    "prompts_per_round": 2,
    "images_per_prompt": 3,
    "num_steps": 4,
    "guidance_scale": 2.0,
    "noise_level": 0.7,
    "steps_per_update": 2,
    "ppo_epochs": 1,
    "clip_range": 0.2,
    "advantage_clip": 5.0,
    "kl_weight": 0.1,
    "training": {"lr": 1.0e-3, "progress": False, "log_every": 1, "seed": 0},
}


class Brightness:
    """A stand-in reward: the mean intensity (so 'better' is known and checkable)."""

    def __call__(self, images, prompts):
        value = images.mean(dim=(1, 2, 3))
        return {"reward": value, "selector": value, "policy": value}


@pytest.fixture(scope="module")
def pieces():
    tokenizer = train_tokenizer(CAPTIONS, vocab_size=100, min_frequency=1, max_length=24)
    info = tokenizer_info(tokenizer)
    task = build_task(
        {"strategy": {"name": "rflow", "num_inference_steps": 4}, "mode": "text",
         "modalities": ["gray"]}
    )  # fmt: skip
    return task, info, tokenize(tokenizer, CAPTIONS)


def make(pieces, options=None, seed=0):
    task, info, tokens = pieces
    params = ReinforceParams.from_params({**REINFORCE, **(options or {})})
    torch.manual_seed(seed)
    network = build_text_conditioned_unet(TINY, info, 1, 1)
    reference = build_text_conditioned_unet(TINY, info, 1, 1)
    reference.load_state_dict(network.state_dict())
    reference.requires_grad_(False)
    loss = DDPOLoss(task, reference, Brightness(), tokens, CAPTIONS, params, 16, seed=0)
    return PolicyNetwork(network), loss, params


def test_a_round_is_sampled_once_and_its_first_update_is_on_policy(pieces):
    policy, loss, params = make(pieces)
    assert loss.per_round == 2  # 4 stochastic flow steps in chunks of 2
    value = loss(policy, {"step": torch.tensor([0])})
    stats = policy.pop_component_means()
    assert stats["ratio"] == 1.0 and stats["clip_fraction"] == 0.0
    assert stats["kl_reference"] == 0.0  # the policy still is the reference
    value.backward()
    grads = [p.grad.abs().sum().item() for p in policy.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0
    first = loss.trajectory
    loss(policy, {"step": torch.tensor([1])})
    assert loss.trajectory is first  # the same round: no new samples
    loss(policy, {"step": torch.tensor([2])})
    assert loss.trajectory is not first and loss.round == 1


def test_ddpo_raises_the_reward_it_is_given(pieces):
    """The signed, per-prompt-normalised objective moves the generator toward higher reward."""
    policy, loss, params = make(pieces, {"rounds": 12, "kl_weight": 0.0})
    config = params.training_config(4)
    result = train(
        policy, loss, RoundSteps(config.max_steps), config, callbacks=[LossComponentsLogger()]
    )
    rewards = [r["round_reward"] for r in result.history if "round_reward" in r]
    early, late = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert late > early + 0.05, rewards


def test_a_resumed_run_equals_the_uninterrupted_one(pieces, tmp_path):
    policy, loss, params = make(pieces)
    config = replace(params.training_config(4), keep_every=2)
    straight = train(
        policy, loss, RoundSteps(config.max_steps), config, checkpoint_dir=tmp_path / "a"
    )
    policy_b, loss_b, _ = make(pieces)
    folder = tmp_path / "b"
    train(policy_b, loss_b, RoundSteps(config.max_steps), config, checkpoint_dir=folder)
    shutil.copy(folder / kept_name(2), folder / LATEST)  # as if it died after round 1
    policy_c, loss_c, _ = make(pieces)
    resumed = train(policy_c, loss_c, RoundSteps(config.max_steps), config, checkpoint_dir=folder)
    for key, value in straight.model_state.items():
        assert torch.equal(value, resumed.model_state[key]), key


def test_parameters_refuse_what_ddpo_sets_itself():
    with pytest.raises(ValueError, match="images_per_prompt must be >= 2"):
        ReinforceParams.from_params({**REINFORCE, "images_per_prompt": 1})
    with pytest.raises(ValueError, match=r"training.max_steps is set by DDPO"):
        ReinforceParams.from_params({**REINFORCE, "training": {"max_steps": 10}})
    params = ReinforceParams.from_params({**REINFORCE, "training": {"checkpoint_every": 3}})
    config = params.training_config(4)
    assert config.max_steps == 6 and config.checkpoint_every == 4  # the round boundary after step 3
