"""One training engine and one training job for every medgen model.

    outcome = run_job(TrainingJob(name=..., factory=..., config=..., checkpoint_dir=..., data=...))

`medgen.training.job` is the entry for training code: job identity -> checkpoint folder ->
staged data -> one process or torch elastic workers -> rank 0's result. `train` is the loop
each worker runs. See docs/architecture.md ("Add a training job") and docs/cluster.md.
"""

from medgen.training.callbacks import Callback, MlflowCallback, ProgressBar, save_loss_curve
from medgen.training.checkpoint import load_checkpoint, save_checkpoint
from medgen.training.config import TrainingConfig
from medgen.training.distributed import JobSpec, Resources, launch
from medgen.training.engine import Trainer, seed_everything, train
from medgen.training.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    TrainingError,
)
from medgen.training.job import JobOutcome, TrainingJob, run_job, train_worker
from medgen.training.lr_finder import LRFinderResult, lr_range_test, plot_lr_range_test
from medgen.training.ranks import get_rank, get_world_size, is_main_process
from medgen.training.results import TrainingResult, TrainingTask
from medgen.training.schedule import build_warmup_cosine_scheduler, warmup_cosine_multiplier

__all__ = [
    "Callback",
    "CheckpointError",
    "ConfigError",
    "JobOutcome",
    "JobSpec",
    "LRFinderResult",
    "MlflowCallback",
    "NonFiniteLossError",
    "ProgressBar",
    "Resources",
    "Trainer",
    "TrainingConfig",
    "TrainingError",
    "TrainingJob",
    "TrainingResult",
    "TrainingTask",
    "build_warmup_cosine_scheduler",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "launch",
    "load_checkpoint",
    "lr_range_test",
    "plot_lr_range_test",
    "run_job",
    "save_checkpoint",
    "save_loss_curve",
    "seed_everything",
    "train",
    "train_worker",
    "warmup_cosine_multiplier",
]
