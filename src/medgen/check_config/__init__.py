"""Check an environment's configuration without a GPU: ``python -m medgen.check_config --env E``.

For ``conf/base`` + ``conf/<env>``, resolved by Kedro's OmegaConfigLoader exactly as a run
resolves them (the project's settings; SLURM's variables absent, so ``oc.env`` defaults apply):

1. every ``params:`` block a node of a registered pipeline reads is parsed by the reader that
   node uses (`blocks`): a key the run would refuse is reported with its message;
2. every training job's model is built by the job's own factory at its configured size, with
   its parameters on the meta device (`jobs_*`, `models`): no memory;
3. one training step of each is measured on fake tensors at the configured per-GPU batch and
   precision (`memory`: the method), giving parameters, weights + gradients + AdamW (+ EMA)
   and activation memory per GPU.

The Markdown table (`report`) for ``--env cluster`` is the one in docs/cluster.md. The command
exits 1 when a block is refused or a model cannot be built.
"""

from medgen.check_config.check import EnvironmentCheck, check_environment
from medgen.check_config.memory import StepMemory, measure_step
from medgen.check_config.models import ModelRow
from medgen.check_config.report import markdown

__all__ = [
    "EnvironmentCheck",
    "ModelRow",
    "StepMemory",
    "check_environment",
    "markdown",
    "measure_step",
]
