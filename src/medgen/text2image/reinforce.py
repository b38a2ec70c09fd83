"""Reinforcement fine-tuning of the text2image generator with DDPO, through the one training job.

Black et al. 2023, "Training Diffusion Models with Reinforcement Learning" (DDPO_IS, PPO
clipping), with the per-prompt advantage normalisation and a KL penalty to the starting model
(`medgen.diffusion.policy_gradient` has the maths and why it is sound). The reward is the learned
scorers' combination (`medgen.text2image.rewards.RewardModel`); nothing here sees the oracle.

One *round* samples ``prompts_per_round`` prompts x ``images_per_prompt`` images with the
stochastic sampler and scores the final images; the round's stochastic steps are split into
chunks of ``steps_per_update`` and every chunk of every PPO epoch is one optimizer step of the
engine, so a round is ``updates_per_round`` engine steps. The first update of a round sees the
sampling policy itself (ratio exactly 1); later ones are off-policy and PPO's clip applies.

Resume: a round's trajectories are drawn from a generator seeded by (seed, round, rank) with the
weights at the round's start, and checkpoints fall on round boundaries only (``checkpoint_every``
is a multiple of ``updates_per_round``), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from medgen.config import config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.diffusion import build_task
from medgen.diffusion.policy_gradient import (
    MIN_STD,
    gaussian_kl,
    gaussian_log_prob,
    group_advantages,
    ppo_loss,
    sample_trajectory,
    step_distribution,
)
from medgen.text2image.generator import build_network
from medgen.text2image.rewards import RewardModel, RewardParams
from medgen.training import (
    JobOutcome,
    TrainingConfig,
    TrainingJob,
    TrainingTask,
    get_rank,
    run_job,
)
from medgen.training.callbacks import LossComponentsLogger
from medgen.training.results import sub_state_dict


@dataclass(frozen=True)
class ReinforceParams:
    """``text2image.reinforce``: DDPO's settings.

    ``rounds`` of sampling; per round ``prompts_per_round`` training prompts x
    ``images_per_prompt`` images (the group whose rewards are normalised), ``num_steps`` sampler
    steps at ``guidance_scale``, stochasticity ``noise_level`` (DDIM's η for ddpm, the SDE's
    scale for rflow); ``steps_per_update`` denoising steps per optimizer step, ``ppo_epochs``
    passes over a round; ``clip_range`` PPO's ε on the per-element ratio (DDPO's 1e-4),
    ``advantage_clip`` |A| cap, ``kl_weight`` β of the KL penalty to the starting model;
    ``training`` the engine's options (``max_steps`` is derived from ``rounds``; ``batch_size``
    is 1 round step)."""

    rounds: int
    prompts_per_round: int
    images_per_prompt: int
    num_steps: int
    guidance_scale: float
    noise_level: float
    steps_per_update: int
    ppo_epochs: int
    clip_range: float
    advantage_clip: float
    kl_weight: float
    training: dict[str, Any]
    resources: dict[str, Any] | None = None
    torch_threads: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReinforceParams:
        config = config_tree_from_params(cls, params, "text2image.reinforce")
        require_positive_ints(
            config, "text2image.reinforce", "rounds", "prompts_per_round", "images_per_prompt",
            "num_steps", "steps_per_update", "ppo_epochs",
        )  # fmt: skip
        if config.images_per_prompt < 2:
            raise ValueError(
                "text2image.reinforce.images_per_prompt must be >= 2: advantages are normalised "
                "within a prompt's images, one image carries no signal"
            )
        for key in ("max_steps", "batch_size", "shuffle", "ema_decay"):
            if key in config.training:
                raise ValueError(
                    f"text2image.reinforce.training.{key} is set by DDPO itself (rounds x "
                    "updates per round, one round step per batch, in order, no EMA): remove it"
                )
        return config

    def updates_per_round(self, stochastic_steps: int) -> int:
        return self.ppo_epochs * math.ceil(stochastic_steps / self.steps_per_update)

    def training_config(self, stochastic_steps: int) -> TrainingConfig:
        per_round = self.updates_per_round(stochastic_steps)
        options = dict(self.training)
        every = options.get("checkpoint_every")
        # checkpoints on round boundaries only (the first at or after the asked step): a resumed
        # round re-draws the same trajectories
        options["checkpoint_every"] = per_round * max(
            1, math.ceil((every or per_round) / per_round)
        )
        options.update(
            max_steps=self.rounds * per_round, batch_size=1, shuffle=False, drop_last=False
        )
        return TrainingConfig.from_dict(options)


def stochastic_step_count(strategy: Any, params: ReinforceParams) -> int:
    """How many of the sampler's ``num_steps`` steps are actions of the policy (σ > 0 at
    ``noise_level``): the steps DDPO trains on."""
    times = strategy.policy_times((1, 1, 1, 1), params.num_steps)
    probe = torch.zeros(1, 1)
    stds = [
        strategy.transition(probe, probe, i, times, params.noise_level)[1]
        for i in range(len(times))
    ]
    return sum(std > MIN_STD for std in stds)


def ddpo_training_config(strategy: Any, params: ReinforceParams, section: str) -> TrainingConfig:
    """The engine config of a DDPO job over ``strategy``'s stochastic steps; ValueError naming
    ``section`` when ``noise_level`` leaves none."""
    stochastic = stochastic_step_count(strategy, params)
    if stochastic == 0:
        raise ValueError(
            f"{section}: noise_level {params.noise_level} leaves no stochastic step: the policy "
            "needs noise_level > 0"
        )
    return params.training_config(stochastic)


class RoundSteps(Dataset):
    """Item ``i`` is engine step ``i``: which round and which update of it."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"step": torch.tensor(index)}


class PolicyNetwork(nn.Module):
    """The generator being fine-tuned, with running means of DDPO's loss components (mean reward,
    KL to the reference, clip fraction, ...) for `LossComponentsLogger`."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.network(*args, **kwargs)

    def record(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
            self._counts[name] = self._counts.get(name, 0) + 1

    def pop_component_means(self) -> dict[str, float]:
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums, self._counts = {}, {}
        return means


class DDPOLoss:
    """The engine's loss: draw the round's trajectories at its first update, then PPO + KL on one
    chunk of its denoising steps per call."""

    def __init__(
        self,
        task: Any,
        reference: nn.Module,
        reward: RewardModel,
        prompt_tokens: torch.Tensor,
        prompt_texts: Sequence[str],
        params: ReinforceParams,
        resolution: int,
        seed: int,
    ) -> None:
        self.task, self.reference, self.reward = task, reference, reward
        self.prompt_tokens, self.prompt_texts = prompt_tokens, list(prompt_texts)
        self.params, self.resolution, self.seed = params, resolution, seed
        self.round: int | None = None
        self.chunks: list[list[int]] = []
        self.per_round = params.updates_per_round(self.stochastic_steps())

    def stochastic_steps(self) -> int:
        return stochastic_step_count(self.task.strategy, self.params)

    def _draw_round(self, model: nn.Module, round_index: int) -> None:
        p = self.params
        generator = torch.Generator().manual_seed(
            self.seed * 1_000_003 + round_index * 7919 + get_rank()
        )
        chosen = torch.randperm(len(self.prompt_texts), generator=generator)[: p.prompts_per_round]
        rows = chosen.repeat_interleave(p.images_per_prompt)
        device = next(model.parameters()).device
        cond = self.prompt_tokens[rows].to(device)
        shape = (
            len(rows),
            self.task.out_channels,
            *self.task.space.spatial_shape((self.resolution,) * 2),
        )
        was_training = model.training
        model.eval()
        trajectory = sample_trajectory(
            self.task.strategy, model, shape, cond, num_steps=p.num_steps,
            guidance_scale=p.guidance_scale, noise_level=p.noise_level, generator=generator,
        )  # fmt: skip
        model.train(was_training)
        with torch.no_grad():
            images = self.task.space.decode(trajectory.final).clamp(-1, 1)
            scores = self.reward(images.cpu(), [self.prompt_texts[i] for i in rows.tolist()])
        advantages = group_advantages(scores["reward"], rows)
        self.advantages = advantages.clamp(-p.advantage_clip, p.advantage_clip).to(device)
        self.trajectory = trajectory
        self.round_scores = {k: float(v.mean()) for k, v in scores.items()}
        steps = trajectory.stochastic_steps
        # the denoising steps of each update, in a per-round shuffled order
        order = [steps[i] for i in torch.randperm(len(steps), generator=generator).tolist()]
        chunks = [
            order[i : i + p.steps_per_update] for i in range(0, len(order), p.steps_per_update)
        ]
        self.chunks = chunks * p.ppo_epochs
        self.round = round_index

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        step = int(batch["step"].reshape(-1)[0])
        policy = getattr(model, "module", model)
        round_index, update = divmod(step, self.per_round)
        if round_index != self.round:
            self._draw_round(model, round_index)
        p, trajectory = self.params, self.trajectory
        self.reference.to(self.advantages.device)
        total = torch.zeros((), device=self.advantages.device)
        stats = {"ratio": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "kl_reference": 0.0}
        chunk = self.chunks[update]
        for index in chunk:
            x = trajectory.states[index]
            options = dict(guidance_scale=p.guidance_scale, noise_level=p.noise_level)
            mean, std = step_distribution(
                self.task.strategy, model, x, index, trajectory.times, trajectory.cond, **options
            )
            log_prob = gaussian_log_prob(trajectory.states[index + 1], mean, std)
            loss, step_stats = ppo_loss(
                log_prob, trajectory.log_probs[index], self.advantages, p.clip_range
            )
            with torch.no_grad():
                ref_mean, _ = step_distribution(
                    self.task.strategy, self.reference, x, index, trajectory.times,
                    trajectory.cond, **options,
                )  # fmt: skip
            kl = gaussian_kl(mean, ref_mean, std).mean()
            total = total + loss + p.kl_weight * kl
            for key in ("ratio", "clip_fraction", "approx_kl"):
                stats[key] += step_stats[key] / len(chunk)
            stats["kl_reference"] += float(kl.detach()) / len(chunk)
        if isinstance(policy, PolicyNetwork):
            policy.record({**stats, **{f"round_{k}": v for k, v in self.round_scores.items()}})
        return total / len(chunk)


def build_reinforce_task(
    data: Mapping[str, TensorBundle],
    *,
    task_config: dict[str, Any],
    network: dict[str, Any],
    tokenizer_info: dict[str, int],
    tokenizer_json: dict[str, Any],
    reinforce: dict[str, Any],
    reward: dict[str, Any],
    resolution: int,
    seed: int,
) -> TrainingTask:
    """The job's factory, run in every worker: the starting generator (``data["init"]``) as the
    policy, a frozen copy as the KL reference, the frozen scorers as the reward."""
    task = build_task(task_config)
    params = ReinforceParams.from_params(reinforce)
    generator_net = build_network(task, network, tokenizer_info)
    generator_net.load_state_dict(data["init"].tensors)
    reference = build_network(task, network, tokenizer_info)
    reference.load_state_dict(data["init"].tensors)
    reference.eval().requires_grad_(False)
    reward_model = RewardModel(
        data["selector"], data["alignment"], tokenizer_json, RewardParams.from_params(reward)
    )
    prompts = data["prompts"]
    loss = DDPOLoss(
        task, reference, reward_model, prompts["tokens"], prompts.metadata["texts"], params,
        resolution, seed,
    )  # fmt: skip
    total = params.rounds * loss.per_round
    return TrainingTask(
        model=PolicyNetwork(generator_net),
        loss_fn=loss,
        train_data=RoundSteps(total),
        callbacks=[LossComponentsLogger(prefix="text2image_reinforce")],
    )


def reinforce_generator(
    generator: TensorBundle,
    selector: TensorBundle,
    alignment: TensorBundle,
    tokenizer_json: dict[str, Any],
    prompt_tokens: torch.Tensor,
    prompt_texts: Sequence[str],
    reinforce_options: Mapping[str, Any],
    reward_options: Mapping[str, Any],
    checkpoint_dir: str | Path,
) -> tuple[TensorBundle, JobOutcome]:
    """Run DDPO from ``generator`` (a pixel-space text2image bundle) on the training prompts;
    the fine-tuned bundle (same metadata) and the job's outcome (per-step records with the
    round's mean rewards). ``reinforce_options`` / ``reward_options``: the parameter blocks."""
    params = ReinforceParams.from_params(reinforce_options)
    RewardParams.from_params(reward_options)  # fail here, in the node, on a bad block
    meta = generator.metadata
    if meta["task_config"].get("space", {}).get("name", "pixel") != "pixel":
        raise ValueError("text2image.reinforce: DDPO is implemented for pixel-space generators")
    config = ddpo_training_config(
        build_task(meta["task_config"]).strategy, params, "text2image.reinforce"
    )
    job = TrainingJob(
        name="text2image_reinforce",
        factory=build_reinforce_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={
            "init": TensorBundle(generator.tensors, {}),
            "selector": selector,
            "alignment": alignment,
            "prompts": TensorBundle({"tokens": prompt_tokens}, {"texts": list(prompt_texts)}),
        },
        options={
            "task_config": meta["task_config"],
            "network": meta["network"],
            "tokenizer_info": meta["tokenizer_info"],
            "tokenizer_json": dict(tokenizer_json),
            "reinforce": dict(reinforce_options),
            "reward": dict(reward_options),
            "resolution": int(meta["resolution"]),
            "seed": config.seed,
        },
        resources=params.resources,
        torch_threads=params.torch_threads,
        artifact_path="text2image/reinforce",
    )
    outcome = run_job(job)
    weights = sub_state_dict(outcome.result.model_state, "network.")
    return TensorBundle(weights, dict(meta)), outcome


def rounds_report(outcome: JobOutcome, objective: str, prompts: int) -> dict[str, Any]:
    """What a DDPO job did: its per-step records (the round's mean rewards among them), the
    first and last round's reward, the time."""
    records = [r for r in outcome.result.history if r.get("kind") == "step"]
    rounds = [
        {k: round(float(v), 5) for k, v in r.items() if k not in ("kind", "lr", "epoch")}
        for r in records
    ]
    return {
        "objective": objective,
        "training_prompts": prompts,
        "steps": outcome.result.steps,
        "records": rounds,
        "first_round_reward": rounds[0].get("round_reward") if rounds else None,
        "last_round_reward": rounds[-1].get("round_reward") if rounds else None,
        "seconds": round(outcome.seconds, 1),
        "skipped": outcome.skipped,
    }
