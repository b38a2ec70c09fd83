"""Every ``params:`` block a pipeline's nodes read, parsed by the reader its node uses.

The blocks come from the registered pipelines themselves (each node's ``params:`` inputs), so a
block a node starts to read is listed at once; `PARSERS` names the ``from_params`` of each (the
same function the node calls), and a block without an entry is reported as not checked. A
parser that raises is a key the run would refuse: its message (with the did-you-mean hint of
`medgen.config`) is the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medgen.autoencoder.latents import Encoding2DParams, Encoding3DParams
from medgen.autoencoder.patch_volume_params import resolve_params
from medgen.autoencoder.training_2d import AutoencoderJob2DParams
from medgen.data.cohort import CohortConfig
from medgen.data.preprocess import PreprocessConfig
from medgen.data.slicing import SliceConfig, VolumeConfig
from medgen.data.splits import SplitConfig
from medgen.data.validation import ValidationRules
from medgen.evaluation.params import InDomainBackboneParams, ReportParams, ScoringParams
from medgen.generation import GenerationParams, LrFinderParams, RoleParams, SharedModelParams
from medgen.generation.class_conditional_3d import ClassConditionalParams
from medgen.generation.demo_checks import SLICES_SECTION, VOLUMES_SECTION
from medgen.generation.volumes_3d import VolumeGenerationParams
from medgen.inpainting import params as inpainting
from medgen.inpainting.cases import CaseConfig
from medgen.inpainting.unet_baseline import UNetBaselineNetwork
from medgen.metrics.demo_checks import DemoCheckParams
from medgen.text2image import params as text2image
from medgen.text2image.alignment import AlignmentParams
from medgen.text2image.attributes import AttributeClassifierParams
from medgen.text2image.best_of_n import BestOfNParams
from medgen.text2image.export import ExportConfig
from medgen.text2image.filtered_finetune import FilteredFinetuneParams
from medgen.text2image.network import TextConditionedUNetConfig
from medgen.text2image.quality_selector import SelectorParams
from medgen.text2image.rated_pool import RatingsParams
from medgen.text2image.reinforce import ReinforceParams
from medgen.text2image.rewards import RewardParams
from medgen.text2image.stages import StageEvalParams
from medgen.training import TrainingConfig
from medgen.training.distributed import Resources


def _one_of(*allowed: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {allowed}, got {value!r}")

    return check


def _path(value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a path, got {value!r}")


def _positive_int(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")


def _integer(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"must be an integer, got {value!r}")


def _patch_volume(value: Mapping[str, Any]) -> None:
    resolve_params(value, 1)
    resolve_params(value, 2)
    Resources.from_dict(value.get("resources"))


def _autoencoder_2d(value: Mapping[str, Any]) -> None:
    AutoencoderJob2DParams.from_dict(value)
    Resources.from_dict(value.get("resources"))


def _job_block(reader: Callable[[Any], Any]) -> Callable[[Any], None]:
    """A block read by ``reader`` into options with ``training`` (the engine's) and
    ``resources`` (the launch's), both parsed as the job will."""

    def parse(value: Mapping[str, Any]) -> None:
        options = reader(value)
        TrainingConfig.from_dict(options.training)
        Resources.from_dict(options.resources)

    return parse


def _role(role: str) -> Callable[[Any], None]:
    return lambda value: RoleParams.from_params(value, role)


def _unet_baseline(value: Mapping[str, Any]) -> None:
    # the node reads these keys one by one (medgen.pipelines.inpainting.nodes.train_unet)
    UNetBaselineNetwork.from_params(value["network"])
    TrainingConfig.from_dict(value["training"])
    Resources.from_dict(value.get("resources"))


def _pretrained(value: Mapping[str, Any]) -> None:
    options = text2image.PretrainedParams.from_params(value)
    TrainingConfig.from_dict(options.training)
    TrainingConfig.from_dict(options.part2.filtered_training)
    _reinforce(options.part2.reinforce)


def _reinforce(value: Mapping[str, Any]) -> None:
    # the engine options DDPO derives (any positive step count shows a bad key the same way)
    ReinforceParams.from_params(value).training_config(1)


def _demo_checks(section: str) -> Callable[[Any], Any]:
    return lambda value: DemoCheckParams.from_params(value, section)


#: ``params:`` name -> the reader its node uses (raises on a key the run would refuse).
PARSERS: dict[str, Callable[[Any], Any]] = {
    # data_processing
    "cohort": CohortConfig.from_params,
    "validation": ValidationRules.from_params,
    "on_bad_subject": _one_of("skip", "fail"),
    "preprocessing": PreprocessConfig.from_params,
    "split": SplitConfig.from_params,
    "slices": SliceConfig.from_params,
    "volumes": VolumeConfig.from_params,
    # autoencoder
    "autoencoder.autoencoder_2d": _autoencoder_2d,
    "autoencoder.patch_volume": _patch_volume,
    "autoencoder.encoding_2d": Encoding2DParams.from_params,
    "autoencoder.encoding_3d": Encoding3DParams.from_params,
    "autoencoder.checkpoint_root": _path,
    # latent_diffusion
    "latent_diffusion.shared": _job_block(SharedModelParams.from_params),
    "latent_diffusion.masks": _role("masks"),
    "latent_diffusion.images": _role("images"),
    "latent_diffusion.generation": GenerationParams.from_params,
    "latent_diffusion.lr_finder": LrFinderParams.from_params,
    "latent_diffusion.demo_checks": _demo_checks(SLICES_SECTION),
    "latent_diffusion.volumes.demo_checks": _demo_checks(VOLUMES_SECTION),
    "latent_diffusion.volumes.generator": ClassConditionalParams.from_params,
    "latent_diffusion.volumes.generation": VolumeGenerationParams.from_params,
    "latent_diffusion.volumes.checkpoint_dir": _path,
    # inpainting
    "inpainting.checkpoint_root": _path,
    "inpainting.cases": CaseConfig.from_params,
    "inpainting.autoencoder": _patch_volume,
    "inpainting.encoding_batch_size": _positive_int,
    "inpainting.diffusion": _job_block(inpainting.DiffusionParams.from_params),
    "inpainting.unet_baseline": _unet_baseline,
    "inpainting.sampling": inpainting.SamplingParams.from_params,
    "inpainting.baselines": inpainting.ClassicalParams.from_params,
    "inpainting.scoring": inpainting.ScoringParams.from_params,
    # text2image_rlhf
    "text2image.checkpoint_root": _path,
    "text2image.export": ExportConfig.from_params,
    "text2image.tokenizer": text2image.TokenizerParams.from_params,
    "text2image.network": TextConditionedUNetConfig.from_params,
    "text2image.generator": _job_block(text2image.GeneratorParams.from_params),
    "text2image.generation": text2image.GenerationParams.from_params,
    "text2image.attributes": AttributeClassifierParams.from_params,
    "text2image.pretrained": _pretrained,
    "text2image.undertrained": text2image.UndertrainedParams.from_params,
    "text2image.ratings": RatingsParams.from_params,
    "text2image.selector": SelectorParams.from_params,
    "text2image.alignment": AlignmentParams.from_params,
    "text2image.reward": RewardParams.from_params,
    "text2image.filtered_finetune": _job_block(FilteredFinetuneParams.from_params),
    "text2image.reinforce": _reinforce,
    "text2image.stage_evaluation": StageEvalParams.from_params,
    "text2image.best_of_n": BestOfNParams.from_params,
    # evaluation
    "evaluation.seed": _integer,
    "evaluation.in_domain_backbone": InDomainBackboneParams.from_params,
    "evaluation.scoring": ScoringParams.from_params,
    "evaluation.report": ReportParams.from_params,
}


@dataclass(frozen=True)
class BlockCheck:
    """One ``params:`` block: ``status`` is ``ok``, ``refused`` (``message`` says why: what
    the node would raise) or ``not checked`` (no parser in `PARSERS`)."""

    pipeline: str
    name: str
    status: str
    message: str = ""


def lookup(params: Mapping[str, Any], dotted: str) -> Any:
    """``params["a"]["b"]`` for ``a.b`` (Kedro's ``params:a.b``); KeyError naming the key."""
    value: Any = params
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(f"parameter {dotted!r} is missing (at {key!r})")
        value = value[key]
    return value


def check_block(pipeline: str, name: str, params: Mapping[str, Any]) -> BlockCheck:
    """Parse the block ``name`` of ``params`` with its node's reader."""
    parser = PARSERS.get(name)
    if parser is None:
        return BlockCheck(pipeline, name, "not checked", "no reader listed in PARSERS")
    try:
        parser(lookup(params, name))
    except Exception as error:  # noqa: BLE001 - the message is the report
        return BlockCheck(pipeline, name, "refused", f"{type(error).__name__}: {error}")
    return BlockCheck(pipeline, name, "ok")


def node_blocks(pipelines: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(pipeline, block) for every ``params:`` input of every node, each block once."""
    seen = set()
    for pipeline_name, pipeline in pipelines.items():
        for node in pipeline.nodes:
            for name in node.inputs:
                if name.startswith("params:") and name not in seen:
                    seen.add(name)
                    yield pipeline_name, name.removeprefix("params:")
