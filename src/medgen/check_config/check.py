"""Check one environment: every parameter block parsed, every training job's model built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.framework.project import configure_project
from kedro.framework.project import pipelines as registered_pipelines

from medgen.check_config.blocks import BlockCheck, check_block, node_blocks
from medgen.check_config.jobs import JobProbe
from medgen.check_config.jobs_autoencoder import autoencoder_jobs
from medgen.check_config.jobs_evaluation import evaluation_jobs
from medgen.check_config.jobs_inpainting import inpainting_jobs
from medgen.check_config.jobs_latent_diffusion import latent_diffusion_jobs
from medgen.check_config.jobs_text2image import text2image_jobs
from medgen.check_config.models import ModelRow, check_job
from medgen.check_config.parameters import load_parameters
from medgen.pipeline_registry import PIPELINE_ORDER

#: pipeline -> the training jobs the check builds for it (data_processing trains nothing)
JOBS: dict[str, Callable[[Mapping[str, Any]], list[JobProbe]]] = {
    "autoencoder": autoencoder_jobs,
    "latent_diffusion": latent_diffusion_jobs,
    "inpainting": inpainting_jobs,
    "text2image_rlhf": text2image_jobs,
    "evaluation": evaluation_jobs,
}


@dataclass(frozen=True)
class EnvironmentCheck:
    """What `check_environment` found for one environment."""

    env: str
    blocks: list[BlockCheck]
    models: list[ModelRow]

    @property
    def problems(self) -> list[str]:
        """Every refused block and every model that could not be built or measured."""
        refused = [f"params:{b.name}: {b.message}" for b in self.blocks if b.status == "refused"]
        failed = [f"{m.pipeline} / {m.model}: {m.error}" for m in self.models if m.error]
        return refused + failed

    @property
    def unchecked(self) -> list[str]:
        return [f"params:{b.name}" for b in self.blocks if b.status == "not checked"]


def job_rows(pipeline: str, params: Mapping[str, Any]) -> list[ModelRow]:
    """The rows of one pipeline's jobs; options the pipeline's code refuses give one error row."""
    try:
        probes = JOBS[pipeline](params)
    except Exception as error:  # noqa: BLE001 - reported as the pipeline's problem
        message = f"{type(error).__name__}: {error}"
        return [ModelRow(pipeline, "(training jobs)", 0, "-", 1, None, error=message)]
    return [check_job(probe) for probe in probes]


def check_environment(
    env: str,
    conf_source: str | Path = "conf",
    runtime_params: Mapping[str, Any] | None = None,
    pipelines: list[str] | None = None,
) -> EnvironmentCheck:
    """Resolve ``env``'s parameters as a run would (scheduler variables absent), parse every
    ``params:`` block the nodes read, and build and measure every training job's model.

    ``pipelines`` (default all registered): the pipelines to check.
    """
    params = load_parameters(env, conf_source, runtime_params)
    configure_project("medgen")  # the registry Kedro would run (find_pipelines needs it)
    names = [
        p
        for p in PIPELINE_ORDER
        if p in registered_pipelines and (pipelines is None or p in pipelines)
    ]
    blocks = [
        check_block(pipeline, name, params)
        for pipeline, name in node_blocks({n: registered_pipelines[n] for n in names})
    ]
    models = [row for name in names if name in JOBS for row in job_rows(name, params)]
    return EnvironmentCheck(env=env, blocks=blocks, models=models)
