"""The ``training.logging`` / ``perceptual`` / ``augmentation`` / ``overfit_batches`` options:
parsed strictly, round-tripped, and placed right in the job identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from training_tasks import regression_bundle, regression_task

from medgen.training import ConfigError, TrainingConfig, TrainingJob
from medgen.training.diagnostics_config import LoggingConfig
from medgen.training.job import takes_perceptual

ROOT = Path(__file__).resolve().parents[2]


def test_nested_blocks_round_trip_through_json():
    config = TrainingConfig.from_dict(
        {
            "logging": {"validation": {"every": 7, "lpips": False}, "timestep_losses": {"bins": 4}},
            "perceptual": {"weight": 0.1, "network": "in_domain"},
            "augmentation": {"enabled": True, "keys": ["images", "seg"], "mask_keys": ["seg"]},
        }
    )
    assert config.logging.validation.every == 7 and not config.logging.validation.lpips
    assert config.logging.timestep_losses.bins == 4 and config.logging.grad_norm.every == 10
    assert config.augmentation.keys == ("images", "seg")
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"logging": {"valdation": {}}}, r"'valdation' \(did you mean 'validation'\?\)"),
        ({"logging": {"validation": {"evry": 2}}}, r"'evry' \(did you mean 'every'\?\)"),
        ({"logging": {"validation": {"every": 0}}}, r"logging\.validation\.every=0"),
        ({"logging": {"grad_norm": {"enabled": "yes"}}}, r"logging\.grad_norm\.enabled"),
        ({"logging": {"timestep_losses": {"bins": 1.5}}}, r"timestep_losses\.bins"),
        ({"logging": {"validation": {"num_steps": 0}}}, r"validation\.num_steps"),
        ({"logging": {"worst_batch": 3}}, r"worst_batch"),
        ({"perceptual": {"weigth": 1.0}}, r"'weigth' \(did you mean 'weight'\?\)"),
        ({"perceptual": {"weight": -1.0}}, r"perceptual\.weight"),
        ({"perceptual": {"network": "vgg"}}, r"perceptual\.network"),
        ({"augmentation": {"flip_prob": 2.0}}, r"augmentation\.flip_prob"),
        ({"augmentation": {"mask_keys": ["seg"]}}, r"augmentation\.mask_keys"),
        ({"augmentation": {"gamma_range": [1.2, 0.8]}}, r"augmentation\.gamma_range"),
        ({"overfit_batches": 0}, r"overfit_batches=0"),
        ({"overfit_batches": 2, "augmentation": {"enabled": True}}, r"overfit_batches"),
    ],
)
def test_bad_options_are_refused_with_their_key_named(params, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig.from_dict(params)


def test_conf_base_writes_a_valid_logging_block_for_every_diffusion_job():
    def load(name):
        return yaml.safe_load((ROOT / "conf/base" / name).read_text())

    ld = load("parameters_latent_diffusion.yml")["latent_diffusion"]
    blocks = {
        "2d": ld["shared"]["training"],
        "3d": ld["volumes"]["generator"]["training"],
        "inpainting": load("parameters_inpainting.yml")["inpainting"]["diffusion"]["training"],
        "text2image": load("parameters_text2image.yml")["text2image"]["generator"]["training"],
    }
    for name, block in blocks.items():
        config = TrainingConfig.from_dict(block)
        written = LoggingConfig.from_params(block["logging"])
        assert config.logging == written, name
        assert set(block["logging"]) == set(LoggingConfig().to_dict()), name  # every diagnostic
        assert not config.perceptual.enabled, name  # off by default


def _job(tmp_path, **training):
    return TrainingJob(
        name="regression",
        factory=regression_task,
        config=TrainingConfig(max_steps=2, batch_size=4, progress=False, **training),
        checkpoint_dir=tmp_path,
        data={"regression": regression_bundle()},
    )


def test_logging_is_bookkeeping_and_new_options_at_their_defaults_leave_the_identity_alone(
    tmp_path,
):
    plain = _job(tmp_path).fingerprint()
    assert "logging" not in plain["training"]
    for key in ("perceptual", "augmentation", "overfit_batches"):
        assert key not in plain["training"]  # as a checkpoint written before they existed
    quiet = LoggingConfig.from_params({"validation": {"enabled": False}})
    assert _job(tmp_path, logging=quiet).fingerprint() == plain
    assert _job(tmp_path, overfit_batches=2).fingerprint()["training"]["overfit_batches"] == 2


def test_a_perceptual_weight_needs_a_factory_with_a_perceptual_term(tmp_path):
    from medgen.generation.training_job import build_diffusion_task
    from medgen.training.perceptual_config import PerceptualTermConfig

    assert takes_perceptual(build_diffusion_task) and not takes_perceptual(regression_task)
    with pytest.raises(ConfigError, match="has no perceptual term"):
        _job(tmp_path, perceptual=PerceptualTermConfig(weight=0.5))
