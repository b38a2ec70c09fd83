"""Best-of-N generation: what is kept, and that file names carry the scores they claim."""

from __future__ import annotations

import re

import pytest
import torch

from medgen.datasets import TensorBundle
from medgen.text2image.best_of_n import BestOfNParams, best_of_n, file_name, modality_label
from medgen.text2image.network import build_text_conditioned_unet
from medgen.text2image.rewards import RewardParams
from medgen.text2image.samplers import OfflineSampler
from medgen.text2image.stages import hacking_gaps
from medgen.text2image.tokenizer import tokenizer_info, tokenizer_to_json, train_tokenizer
from tests.text2image.test_network import TINY
from tests.torch_threads import single_torch_thread  # noqa: F401

PROMPTS = [
    "Brain MRI, FLAIR: without visible metastases",
    "Brain MRI, T1 post-gadolinium: 1 metastasis of 9 mm in the left frontal lobe",
]
TASK = {"strategy": {"name": "rflow", "num_inference_steps": 2}, "mode": "text",
        "modalities": ["gray"]}  # fmt: skip


class MeanIntensityReward:
    """Scores an image by its mean intensity: a known, checkable stand-in for the scorers."""

    def __init__(self, selector_threshold: float, policy_threshold: float = 0.0) -> None:
        self.params = RewardParams(0.5, 0.5, selector_threshold, policy_threshold)
        self.seen: list[torch.Tensor] = []

    def __call__(self, images, prompts):
        self.seen.append(images)
        quality = (images.mean(dim=(1, 2, 3)) + 1) / 2
        policy = 1 - quality
        passed = (quality >= self.params.selector_threshold) & (
            policy >= self.params.policy_threshold
        )
        return {"selector": quality, "policy": policy, "reward": (quality + policy) / 2,
                "passed": passed.float()}  # fmt: skip


@pytest.fixture(scope="module")
def sampler():
    tokenizer = train_tokenizer(PROMPTS, vocab_size=64, min_frequency=1, max_length=24)
    info = tokenizer_info(tokenizer)
    torch.manual_seed(0)
    net = build_text_conditioned_unet(TINY, info, 1, 1)
    meta = {"task_config": TASK, "network": TINY, "tokenizer_info": info, "resolution": 16}
    return OfflineSampler(TensorBundle(net.state_dict(), meta), tokenizer_to_json(tokenizer))


def params(**options):
    base = {"attempts": 3, "keep_per_prompt": 1, "max_prompts": 2, "guidance_scale": 1.0,
            "num_steps": 2, "seed": 0}  # fmt: skip
    return BestOfNParams.from_params({**base, **options})


def test_file_names_carry_the_scores_they_claim(sampler):
    reward = MeanIntensityReward(selector_threshold=0.0)
    files, kept, report = best_of_n(sampler, PROMPTS, reward, params())
    assert len(files) == len(kept["images"]) == report["kept"] == 2
    for name, item in zip(files, report["files"], strict=True):
        match = re.fullmatch(r"(.+)_(\d+)_selector_(\d\.\d\d)_policy_(\d\.\d\d)", name)
        assert match, name
        index = int(match.group(2))
        image = kept["images"][index : index + 1]
        scores = reward(image, [item["prompt"]])
        assert float(match.group(3)) == pytest.approx(float(scores["selector"][0]), abs=0.005)
        assert float(match.group(4)) == pytest.approx(float(scores["policy"][0]), abs=0.005)
        assert match.group(1) == modality_label(item["prompt"])
    assert report["acceptance_rate"] == 1.0 and report["attempts"] == 2  # all pass at once


def test_nothing_passes_an_impossible_threshold_and_every_attempt_is_made(sampler):
    files, kept, report = best_of_n(
        sampler, PROMPTS, MeanIntensityReward(selector_threshold=1.01), params()
    )
    assert files == {} and report["kept"] == 0 and report["acceptance_rate"] == 0.0
    assert report["attempts"] == 3 * len(PROMPTS)
    assert "unfiltered_baseline_mean" in report


def test_a_candidate_the_policy_rejects_does_not_end_its_prompts_attempts(
    sampler,
):
    # every candidate passes the Selector, none the Policy: each prompt uses all N attempts
    reward = MeanIntensityReward(selector_threshold=0.0, policy_threshold=1.01)
    files, _, report = best_of_n(sampler, PROMPTS, reward, params())
    assert report["attempts"] == 3 * len(PROMPTS)
    assert report["candidates_passing_selector"] == 3 * len(PROMPTS)
    assert report["candidates_accepted"] == 0 and report["acceptance_rate"] == 0.0 and not files


def test_modality_labels_and_names():
    assert modality_label(PROMPTS[1]) == "T1_post-gadolinium"
    assert modality_label("no grammar here") == "image"
    assert file_name(PROMPTS[0], 3, 0.856, 0.9249) == "FLAIR_3_selector_0.86_policy_0.92"


def test_hacking_gaps_are_proxy_gain_minus_oracle_gain():
    def stage(selector, policy, quality, agreement):
        return {
            "proxy": {"selector": selector, "policy": policy, "reward": (selector + policy) / 2},
            "oracle": {"quality": quality, "attribute_agreement": agreement},
        }

    gaps = hacking_gaps({"a": stage(0.5, 0.5, 0.6, 0.5), "b": stage(0.9, 0.6, 0.6, 0.45)})
    assert gaps["b"]["quality_gap"] == pytest.approx(0.4)  # selector +0.4, oracle +0
    assert gaps["b"]["alignment_gap"] == pytest.approx(0.15)  # policy +0.1, agreement −0.05
    assert gaps["b"]["gains_from"] == "a"
